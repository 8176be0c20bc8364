"""Running a plugin script (or git, for a push) the way ARCHITECTURE.md binds it.

``bash SCRIPT ARGS...`` (so neither the run bit nor a shebang is required), an environment
built from scratch, cwd = the caller's directory on the local CLI (as the original, so
``postgres:restore db backup.sql`` finds a relative path) and GOKKU_ROOT over SSH, its
own process group, the request's
streams handed over as file descriptors (bytes, untouched), and the exit code returned
exactly (128+N when killed by signal N).

When this process is told to hang up (the SSH door does that when the client goes away)
the script's whole group gets HUP, then TERM, then KILL, a grace period apart. When this
process dies without a word (SIGKILL), a watcher started beside the script kills its
group: a script never runs on after the command that holds its locks is gone. In a
session of the embedded server, a command that is its caller's last act (``last``) may
replace this process instead (``_hand_over``): the server worker then does what this
would have done after it (``gokku.ssh.handover``).
"""

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from gokku import access
from gokku.context import Context
from gokku.paths import Root
from gokku.plugins.manifest import CommandIO
from gokku.plugins.registry import Plugin
from gokku.storage import HELD_LOCKS_VAR, held_locks, write_atomic

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GRACE_SECONDS = 1.5
FORWARDED = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)


def base_env(ctx: Context) -> dict[str, str]:
    """The environment of anything a request runs; nothing the client sent leaks in."""
    root = ctx.root
    ident = ctx.request.identity
    env = {
        "PATH": os.environ.get("PATH") or DEFAULT_PATH,
        "HOME": os.environ.get("HOME") or str(Path.home()),
        "LANG": os.environ.get("LANG") or "C.UTF-8",
        "GOKKU_ROOT": str(root.path),
        "GOKKU_DIR": str(root.path),
        "GOKKU_SCRIPTS_DIR": str(root.scripts),
        "GOKKU_PLUGINS_DIR": str(root.plugins),
        "GOKKU_SERVICES_DIR": str(root.services),
        "GOKKU_APPS_DIR": str(root.apps),
        "GOKKU_COMMAND": ctx.verb,
        "GOKKU_KEY_NAME": ident.name,
        "GOKKU_KEY_FINGERPRINT": ident.fingerprint,
        "GOKKU_ROLE": ident.role,
        "GOKKU_REMOTE_ADDR": ident.remote,
        "GOKKU_FORMAT": ctx.format,
    }
    for name in ("USER", "LOGNAME", "LC_ALL", "TZ", "GOKKU_LOCK_TIMEOUT"):
        if os.environ.get(name):
            env[name] = os.environ[name]
    held = held_locks()
    if held:  # a call back into gokku passes through these instead of waiting on us
        env[HELD_LOCKS_VAR] = " ".join(sorted(held))
    env.update(access.decision_env())  # callbacks act on what the command was allowed on
    if ctx.request.term:
        env["TERM"] = ctx.request.term
    if ctx.app:
        env["GOKKU_APP"] = ctx.app
    if ctx.quiet:
        env["GOKKU_QUIET"] = "1"
    if ctx.trace:
        env["GOKKU_TRACE"] = "1"
    return env


def callback_env() -> dict[str, str]:
    """How a child calls back into this very gokku (same interpreter, same package,
    ``gokku.callback``): the helpers do, and so do the git hooks a push runs."""
    return {
        "GOKKU_PYTHON": sys.executable,
        "GOKKU_PYTHONPATH": str(Path(__file__).resolve().parent.parent),
    }


def script_env(ctx: Context, plugin: Plugin, extra: dict[str, str] | None = None) -> dict[str, str]:
    """A plugin script's environment: the base, its plugin and the settings an admin gave
    it (``GOKKU_CONFIG_*``), the helpers and a way back in."""
    return {
        **base_env(ctx),
        **ORIGINAL_EXPORTS,
        "BASH_ENV": str(ctx.root.helpers),
        "GOKKU_PLUGIN_DIR": str(plugin.path),
        "GOKKU_PLUGIN_NAME": plugin.name,
        **plugin.config_env(),
        **callback_env(),
        **(extra or {}),
    }


HELPERS_SOURCE = Path(__file__).resolve().parent / "data" / "plugin-helpers.sh"
# What the original's helpers export and its official plugins read (GOKKU_DIR and
# GOKKU_SCRIPTS_DIR come with the base environment).
ORIGINAL_EXPORTS = {
    "GOKKU_BIN_DIR": "/usr/local/bin",
    "GOKKU_OS": os.uname().sysname.lower(),
    "GOKKU_ARCH": os.uname().machine.lower(),
}


def script_cwd(ctx: Context) -> Path:
    """Where a plugin script starts: the caller's directory on the server's own CLI, the
    state directory over SSH (the server's working directory means nothing to a client)."""
    if not ctx.request.identity.over_ssh:
        with contextlib.suppress(OSError):
            here = Path.cwd()
            if os.access(here, os.R_OK | os.X_OK):  # root's 0700 home, after the switch
                return here
    return ctx.root.path


def helpers_text() -> bytes:
    """This version's helpers, with the name rule filled in from ``gokku.names`` and what
    a callback keeps of the environment from ``gokku.callback``."""
    from gokku.callback import CALLBACK_VARIABLES
    from gokku.names import NAME_PATTERN

    text = HELPERS_SOURCE.read_bytes().replace(b"@NAME_PATTERN@", NAME_PATTERN.encode())
    return text.replace(b"@CALLBACK_VARIABLES@", " ".join(CALLBACK_VARIABLES).encode())


def install_helpers(root: Root) -> None:
    """Keep ``scripts/plugin-helpers.sh`` equal to this version's copy."""
    wanted = helpers_text()
    try:
        if root.helpers.read_bytes() == wanted:
            return
    except FileNotFoundError:
        pass
    root.scripts.mkdir(parents=True, exist_ok=True)
    write_atomic(root.helpers, wanted, mode=0o644)


def _foreground_tty(fds: tuple[int, ...]) -> int | None:
    """The fd of our controlling terminal when we are its foreground job, else None."""
    for fd in fds:
        with contextlib.suppress(OSError):
            if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp():
                return fd
    return None


def run_script(
    ctx: Context,
    plugin: Plugin,
    script: Path,
    args: list[str],
    extra_env: dict[str, str] | None = None,
    io: CommandIO | None = None,
    cwd: Path | None = None,
    own_group: bool = True,
    last: bool = False,
) -> int:
    """Run a plugin's ``script`` with ``args`` (see ``run``), in ``cwd`` when given."""
    install_helpers(ctx.root)
    command = ["bash", str(script), *args]  # --trace: the helpers turn on set -x
    env = script_env(ctx, plugin, extra_env)
    where = script_cwd(ctx) if cwd is None else cwd
    return run(ctx, command, where, env, io, own_group, last)


def spawn_captured(
    ctx: Context,
    plugin: Plugin,
    script: Path,
    args: list[str],
    extra_env: dict[str, str] | None = None,
) -> subprocess.Popen:
    """Start a plugin's ``script`` whose output Gokku reads itself (a service's status
    for a listing): stdout a pipe, no stdin, stderr dropped (its progress lines are not
    the answer), in its own process group so that the caller can kill all of it."""
    install_helpers(ctx.root)
    return subprocess.Popen(
        ["bash", str(script), *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=script_cwd(ctx),
        env=script_env(ctx, plugin, extra_env),
        process_group=0,
        close_fds=True,
    )


def run(
    ctx: Context,
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    io: CommandIO | None = None,
    own_group: bool = True,
    last: bool = False,
) -> int:
    """Run ``command`` to completion with the request's streams; return its exit code.

    ``io`` says how the command uses its streams (plugin.yml). One that may not have a
    terminal (bytes out, data in) gets the door's terminal, if there is one, in raw mode
    for the run, so that no byte is rewritten (``\n`` into ``\r\n``, or echoed). For a
    command that does not read data, Ctrl-C still interrupts it: the terminal keeps
    turning it into SIGINT.

    ``own_group=False`` is for a process that is itself part of a command's group, as a
    git hook is of the ``git receive-pack`` a door runs: its children must stay in that
    group, which is what the door hangs up (HUP, TERM, KILL) when the client goes away.
    A group of their own would outlive the hook that the hang-up kills. Signals sent to
    the group reach them directly, so nothing is forwarded.

    ``last=True`` says the caller returns the code as it is and does nothing after (its
    locks aside): in a session of the embedded server the command may then replace this
    process instead (``_hand_over``), and this never returns.
    """
    request = ctx.request
    for stream in (request.stdout, request.stderr):
        stream.flush()
    fds = (request.stdin.fileno(), request.stdout.fileno(), request.stderr.fileno())
    if not own_group:
        code = subprocess.call(
            command, stdin=fds[0], stdout=fds[1], stderr=fds[2], cwd=cwd, env=env, close_fds=True
        )
        return _exit_code(code)
    tty = _foreground_tty(fds)
    # The handlers are in place before the child exists: a hang-up that arrives during the
    # spawn is kept and forwarded, and signals we catch start out default in the child
    # (exec resets them), even where we were started with SIGINT ignored. No preexec_fn:
    # the SSH door runs copy threads, and a fork with Python code in the child is unsafe.
    raw = fds if io is not None and not io.pty_allowed else ()
    keep_signals = io is not None and io.stdin != "data"
    if last:
        _hand_over(command, cwd, env, fds, raw, keep_signals)
    with _raw_terminals(raw, keep_signals), _Forwarder() as forwarder, _Watcher() as watcher:
        proc = subprocess.Popen(
            command,
            stdin=fds[0],
            stdout=fds[1],
            stderr=fds[2],
            cwd=cwd,
            env=env,
            process_group=0,
            close_fds=True,
        )
        watcher.watch(proc.pid)
        try:
            if tty is not None:
                _hand_terminal(tty, proc.pid)
            forwarder.attach(proc.pid)
            code = proc.wait()
            if forwarder.hung_up:
                forward_to_group(proc.pid, signal.SIGKILL)
        finally:
            # Before the terminal's modes are restored: a background process may not
            # change them (SIGTTOU stops it, or EIO when its group is orphaned).
            if tty is not None:
                _hand_terminal(tty, os.getpgrp())
    return _exit_code(code)


def _exit_code(code: int) -> int:
    """A child's status as a shell reports it: 128+N when it died of signal N."""
    return 128 - code if code < 0 else code


@contextlib.contextmanager
def _raw_terminals(fds: tuple[int, ...], keep_signals: bool) -> Iterator[None]:
    import termios

    saved = _set_raw(fds, keep_signals)
    try:
        yield
    finally:
        for fd, attrs in saved.values():
            with contextlib.suppress(OSError, termios.error):
                termios.tcsetattr(fd, termios.TCSADRAIN, attrs)


def _set_raw(fds: tuple[int, ...], keep_signals: bool) -> dict[str, tuple[int, list]]:
    """Put the terminals among ``fds`` in raw mode (ISIG kept if asked); what they were."""
    import termios
    import tty

    saved: dict[str, tuple[int, list]] = {}
    for fd in fds:
        with contextlib.suppress(OSError, termios.error):
            if os.isatty(fd) and os.ttyname(fd) not in saved:
                saved[os.ttyname(fd)] = (fd, termios.tcgetattr(fd))
                tty.setraw(fd, termios.TCSANOW)
                if keep_signals:
                    attrs = termios.tcgetattr(fd)
                    attrs[3] |= termios.ISIG
                    termios.tcsetattr(fd, termios.TCSANOW, attrs)
    return saved


def _hand_over(
    command: list[str],
    cwd: Path,
    env: dict[str, str],
    fds: tuple[int, int, int],
    raw: tuple[int, ...],
    keep_signals: bool,
) -> None:
    """Become ``command`` when this is a session the server worker can finish
    (``gokku.ssh.handover``): nothing left to wait for, no Python process per held
    session. The terminal's modes are set for it and never restored: the pty is the
    session's and closes with it. Returns when this process has to wait instead."""
    from gokku.ssh import handover

    if handover.can_exec(fds):
        _set_raw(raw, keep_signals)
        handover.exec_command(command, str(cwd), env)


def _hand_terminal(fd: int, pgid: int) -> None:
    """Make ``pgid`` the terminal's foreground job (as a shell does for its jobs).

    A child that touched the terminal before this ran was stopped (SIGTTIN/SIGTTOU):
    SIGCONT lets it go on, now in the foreground.
    """
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with contextlib.suppress(OSError):
            os.tcsetpgrp(fd, pgid)
    finally:
        signal.signal(signal.SIGTTOU, old)
    if pgid != os.getpgrp():
        forward_to_group(pgid, signal.SIGCONT)


def forward_to_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


# Reads the group to watch, then waits: "done" means the command ended and the group is
# left alone; the end of input without it means the command died, and the group dies too.
WATCHER = 'read -r group || exit 0; read -r done && exit 0; kill -s KILL -- "-$group"'


class _Watcher:
    """A small process beside the script, in a group of its own, holding the read end of
    a pipe only we write to: when we die, even by SIGKILL, it sees the end of input
    without "done" and kills the script's group. Started before the script, so that no
    moment exists where the script runs unwatched but that of writing its pid."""

    def __enter__(self) -> "_Watcher":
        self._watching = False
        read, self._write = os.pipe()
        try:
            self._proc = subprocess.Popen(
                ["sh", "-c", WATCHER],
                stdin=read,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                process_group=0,
                close_fds=True,
            )
        except BaseException:
            os.close(self._write)
            raise
        finally:
            os.close(read)
        return self

    def watch(self, pgid: int) -> None:
        with contextlib.suppress(OSError):  # it died: the script runs on, as without it
            os.write(self._write, f"{pgid}\n".encode())
            self._watching = True

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError):  # it is gone already: nothing to tell
            if self._watching:  # else the end of input before a group: it just exits
                os.write(self._write, b"done\n")
        os.close(self._write)
        self._proc.wait()


class _Forwarder:
    """Pass signals sent to us on to the script's group; escalate a hang-up to KILL.

    Signals that arrive before the script exists are kept and sent once it does.
    """

    def __init__(self) -> None:
        self.pgid: int | None = None
        self.pending: list[int] = []
        self.hung_up = False
        self._escalation = iter((signal.SIGTERM, signal.SIGKILL))
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_Forwarder":
        handlers = {sig: self._forward for sig in FORWARDED}
        handlers[signal.SIGHUP] = self._hang_up
        handlers[signal.SIGALRM] = self._escalate
        self._previous = {sig: signal.signal(sig, h) for sig, h in handlers.items()}
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def attach(self, pgid: int) -> None:
        self.pgid = pgid
        for signum in self.pending:
            forward_to_group(pgid, signum)

    def _forward(self, signum: int, _frame: object = None) -> None:
        if self.pgid is None:
            self.pending.append(signum)
        else:
            forward_to_group(self.pgid, signum)

    def _hang_up(self, signum: int, _frame: object) -> None:
        self.hung_up = True
        self._forward(signum)
        self._forward(signal.SIGCONT)
        signal.setitimer(signal.ITIMER_REAL, GRACE_SECONDS)

    def _escalate(self, _signum: int, _frame: object) -> None:
        sig = next(self._escalation, None)
        if sig is not None:
            self._forward(sig)
            signal.setitimer(signal.ITIMER_REAL, GRACE_SECONDS)
