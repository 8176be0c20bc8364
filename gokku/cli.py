"""The ``gokku`` command on the server: the CLI door into the dispatcher."""

import os
import signal
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gokku.context import Request
    from gokku.paths import Root


def _become_state_owner(root: "Root") -> None:
    """Root works on the state as the user that owns it, as ``dokku`` does.

    ``ops/install`` gives GOKKU_ROOT to a ``gokku`` system user, which the SSH doors run
    as; files that root made there would be out of that user's reach afterwards. A gokku
    that user cannot run (an interpreter or checkout under root's 0700 home) is refused
    before the switch, with the reason, instead of failing at its next import.
    """
    if os.geteuid() != 0:
        return
    import pwd

    from gokku.errors import GokkuError

    try:
        owner = root.path.stat().st_uid
    except OSError:
        return
    if owner == 0:
        return
    user = pwd.getpwuid(owner)
    groups = os.getgrouplist(user.pw_name, user.pw_gid)
    interpreter = Path(sys.executable).resolve().parent
    for path in (interpreter, Path(os.__file__).parent, Path(__file__).parent):
        if not _reachable(path.resolve(), user.pw_uid, groups):
            raise GokkuError(
                f"the state in {root.path} belongs to {user.pw_name}, who cannot reach "
                f"{path}: run a gokku installed for it (ops/install puts one in /usr/local/bin)"
            )
    os.initgroups(user.pw_name, user.pw_gid)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)


def _reachable(path: Path, uid: int, groups: list[int]) -> bool:
    """Whether the user can walk to ``path``: every directory on the way searchable."""
    for directory in (path, *path.parents):
        info = directory.stat()
        if info.st_uid == uid:
            bit = stat.S_IXUSR
        elif info.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not info.st_mode & bit:
            return False
    return True


TERMINAL_SIGNALS = (signal.SIGINT, signal.SIGQUIT, signal.SIGTSTP)


def ignore_terminal_signals() -> None:
    """For a door's process: under a pty, a 0x03 (or 0x1c, 0x1a) byte in the client's data
    is a signal to the terminal's foreground job, and while no script runs that job is the
    door itself, which must live to write its audit line. While a script runs, the runner
    catches these and forwards them to it (so the script starts with them at default).
    The embedded server ignores them in the worker before it execs (``ssh.session``);
    here, for sshd's forced command, it is as early as gokku's own code runs."""
    for signum in TERMINAL_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    # ssh-command is a door, not a caller: it runs as whoever sshd logged in (root too
    # works on the state as its owner), on the state its --root names (GOKKU_ROOT is not
    # even set under sshd).
    door = list(args[:1]) == ["ssh-command"]
    if not door:
        from gokku import client

        code = client.main(list(args))
        if code is not None:  # a client whose ssh could not start, or a bad remote
            return code
    from gokku.dispatcher import dispatch

    request = local_request(args)
    if door:
        ignore_terminal_signals()
        served = _served_root(args)
        code = dispatch(request, served, prepare=_become_state_owner)
        _owed_audit_line(served, args, code)
        return code
    code = dispatch(request, prepare=_become_state_owner)
    if code in HINTED:
        _hint_other_side(list(args))
    return code


# Usage errors and unknown commands: what a command meant for the remote gets here.
HINTED = (2, 127)


def _hint_other_side(args: list[str]) -> None:
    from gokku import client
    from gokku.paths import Root

    hint = client.local_hint(args, str(Root.from_env().path))
    if hint is not None:
        sys.stderr.write(f"       {hint}\n")


def _served_root(args: list[str]) -> "Root | None":
    """The state an ``ssh-command`` serves (its ``--root``), known before any of its code
    runs: a crash anywhere in the door is logged there, never under the login user's
    default root. None: the door's own parse reports a missing one."""
    from gokku.paths import Root

    value = _door_option(args, "--root")
    return Root(Path(value).absolute()) if value else None


def _door_option(args: list[str], flag: str) -> str:
    words = args[1:]
    for name, value in zip(words, words[1:], strict=False):
        if name == flag and value:
            return value
    return ""


def _owed_audit_line(served: "Root | None", args: list[str], code: int) -> None:
    """The door's command has its audit line even when ``ssh-command``'s own code never
    ran (a crash routing it): written here, the one place that still runs. Nothing more
    can be said if that fails too: the crash is in the log already."""
    try:
        from gokku.commands import ssh
        from gokku.paths import Root

        ssh.owed_line(served or Root.from_env(), _door_option(args, "--fingerprint"), code)
    except Exception:  # noqa: BLE001 - the last resort of a crash already reported
        pass


def local_request(args: list[str]) -> "Request":
    """A request from this machine's user (the CLI, or a callback of a script): the
    state's owner, with the standard streams."""
    from gokku.context import Identity, Request

    # A caller at a terminal has, in SSH terms, been granted a pty: scripts get its TERM
    # (psql and redis-cli need it to drive the terminal).
    term = os.environ.get("TERM") if any(os.isatty(fd) for fd in (0, 1, 2)) else None
    return Request(argv=list(args), identity=Identity.local(), term=term)


if __name__ == "__main__":
    raise SystemExit(main())
