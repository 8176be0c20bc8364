"""The ``gokku`` command on the server: the CLI door into the dispatcher."""

import os
import sys


def _become_state_owner() -> None:
    """Root works on the state as the user that owns it, as ``dokku`` does.

    ``ops/install`` gives GOKKU_ROOT to a ``gokku`` system user, which the SSH doors run
    as; files that root made there would be out of that user's reach afterwards.
    """
    if os.geteuid() != 0:
        return
    import pwd

    from gokku.paths import Root

    try:
        owner = Root.from_env().path.stat().st_uid
    except OSError:
        return
    if owner == 0:
        return
    user = pwd.getpwuid(owner)
    os.initgroups(user.pw_name, user.pw_gid)
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)
    os.environ.update(HOME=user.pw_dir, USER=user.pw_name, LOGNAME=user.pw_name)


def main(argv: list[str] | None = None) -> int:
    from gokku.context import Identity, Request
    from gokku.dispatcher import dispatch

    _become_state_owner()
    args = sys.argv[1:] if argv is None else argv
    # A caller at a terminal has, in SSH terms, been granted a pty: scripts get its TERM
    # (psql and redis-cli need it to drive the terminal).
    term = os.environ.get("TERM") if any(os.isatty(fd) for fd in (0, 1, 2)) else None
    return dispatch(Request(argv=list(args), identity=Identity.local(), term=term))


if __name__ == "__main__":
    raise SystemExit(main())
