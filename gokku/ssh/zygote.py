"""The session runner ("zygote"): one per server worker, it has imported the dispatch
path once and forks a fresh child for every session, instead of a new interpreter.

The server worker starts it as a new interpreter (``python -P -m gokku.ssh.zygote ROOT
FD NOFILE``), so it holds nothing of the server (no host key, no listening socket, no
asyncssh) and nothing of any session: after its imports it only waits for requests on a
unix socket. A request is the session's three descriptors (SCM_RIGHTS) and a JSON
message: the fingerprint that logged in, the variables sshd would set
(``SSH_ORIGINAL_COMMAND``, ``SSH_CONNECTION``, ``TERM``) and whether fd 0 is a pty. The
zygote forks; the child becomes what ``python -P -m gokku ssh-command --root ROOT
--fingerprint FP`` started by the server was: its own session (setsid), the descriptor
limit the server started with, the pty as controlling terminal with the terminal's
signals ignored, fds 0-2 and nothing else, the zygote's clean environment plus those
variables, then ``gokku.cli.main`` and its exit code. The door's argv is built here from
ROOT: a request cannot make the zygote run anything else. Each child is a fresh fork of
a process that never ran a session, so nothing of one session reaches the next. Signal
dispositions are left as the interpreter set them, so the child starts with those of a
new interpreter.

The zygote answers each request with the child's pid and a pidfd (the server signals
through it: never a recycled pid), and once the child has exited, with its exit code
(negative for a signal, as ``subprocess``); it answers a ping at once (the server kills
a zygote that stops answering). Each child gets a line of its own (fd 3, a socket) for
what it hands over to the server (``gokku.ssh.handover``): the other end goes to the
server with the pid, so what the child says reaches the server straight, whatever becomes
of the zygote (one killed between a hand-over and its passing on lost that session's
audit line). It exits when the server's end closes, once it has hung up the sessions that
became their scripts (the server held their locks).
"""

import contextlib
import fcntl
import gc
import importlib
import json
import os
import select
import selectors
import socket
import sys
import termios
import traceback
from typing import NoReturn

from gokku.ssh import door_argv, fdlimit

READY, PING, PONG = "ready", "ping", "pong"
ZYGOTE_NAME, SESSION_NAME = "gokku-zygote", "gokku-session"
MAX_MESSAGE = 1 << 18  # a request: an SSH command string and a few variables
MAX_LOCKS = 64  # the lock descriptors a session hands over with its command
# Imported before the first fork: what every session runs (door, dispatcher, audit,
# relays, runner, plugin registry) and every built-in command's module.
PRELOAD = (
    "gokku.cli",
    "gokku.commands.ssh",
    "gokku.dispatcher",
    "gokku.ssh.relay",
    "gokku.ssh.handover",
    "gokku.runner",
    "gokku.plugins.registry",
)


def send(sock: socket.socket, message: dict, fds: list[int] | None = None) -> None:
    """One message (one datagram of a SOCK_SEQPACKET pair), with descriptors if any."""
    socket.send_fds(sock, [json.dumps(message).encode()], fds or [])


def receive(sock: socket.socket, max_fds: int) -> tuple[dict | None, list[int]]:
    """The next message and its descriptors; None at end (the other side is gone)."""
    data, fds, flags, _ = socket.recv_fds(sock, MAX_MESSAGE, max_fds, socket.MSG_CMSG_CLOEXEC)
    if flags & (socket.MSG_TRUNC | socket.MSG_CTRUNC):
        for fd in fds:
            os.close(fd)
        raise ValueError("message or descriptors cut short")
    return (json.loads(data) if data else None), fds


def become_session(nofile: int, pty: bool) -> None:
    """In a session's process, after setsid: the descriptor limit the server started with
    (``gokku.ssh.fdlimit``), and with a pty, the pty slave (fd 0) as controlling terminal,
    ignoring what its keys signal from the very start (see
    ``gokku.cli.ignore_terminal_signals``). Shared with the server's fallback, which runs
    it before exec."""
    fdlimit.restore(nofile)
    if pty:
        from gokku.cli import ignore_terminal_signals

        ignore_terminal_signals()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def preload() -> None:
    """Import what sessions run, then keep it out of the collector's way: pages the
    children never write stay shared with the zygote."""
    from gokku.commands import BUILTINS

    for name in (*PRELOAD, *sorted({b.module for b in BUILTINS.values()})):
        importlib.import_module(name)
    gc.freeze()


def serve(sock: socket.socket, root: str, nofile: int) -> None:
    """Fork a child per request, report its pid and its exit, until the worker is gone
    (its end of the socket closed, or a message to it failed); then hang up the sessions
    that had become their scripts."""
    lines: dict[int, socket.socket] = {}  # pid → the server's end of its line (ssh.handover)
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        _answer(sock, root, nofile, lines)
    _hang_up_scripts([pid for pid, line in lines.items() if _ended(line)])


def _answer(sock: socket.socket, root: str, nofile: int, lines: dict[int, socket.socket]) -> None:
    """``serve``'s requests and reports, until the end of the worker's socket."""
    base_env = dict(os.environ)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    children: dict[int, int] = {}  # pidfd → pid
    send(sock, {READY: os.getpid()})
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                message, fds = receive(sock, 3)
                if message is None:
                    return
                if PING in message:
                    send(sock, {PONG: True})
                    continue
                try:
                    owned = (selector, sock, *lines.values())
                    pid, ours = _fork(message, fds, root, base_env, nofile, owned)
                except OSError as exc:  # no fork (memory, process limit): the server says so
                    send(sock, {"id": message["id"], "error": str(exc)})
                    continue
                finally:
                    for fd in fds:
                        os.close(fd)
                pidfd = os.pidfd_open(pid)
                children[pidfd] = pid
                selector.register(pidfd, selectors.EVENT_READ)
                lines[pid] = ours  # kept, unread: whether it ended, if the server goes
                send(sock, {"id": message["id"], "pid": pid}, [pidfd, ours.fileno()])
            elif key.fd in children:
                pid = children.pop(key.fd)
                selector.unregister(key.fd)
                os.close(key.fd)
                _, status = os.waitpid(pid, 0)
                lines.pop(pid).close()
                send(sock, {"pid": pid, "status": os.waitstatus_to_exitcode(status)})


def _ended(line: socket.socket) -> bool:
    """Whether a session's line is at its end (it exec'd its script, or exits), seen
    without reading it: what it still holds is the worker's, which may yet read it (the
    zygote is stopped first when the worker stops)."""
    poller = select.poll()
    poller.register(line, select.POLLIN)  # the peer's close shows as POLLHUP, data or not
    return any(events & select.POLLHUP for _, events in poller.poll(0))


def _hang_up_scripts(pids: list[int]) -> None:
    """The server worker is gone: the sessions that became their scripts lost what held
    their locks and would write their audit lines, so their groups are hung up as the
    worker would have (HUP, TERM, KILL, a grace period apart; the leaders are reaped only
    at the end, so that no group's number is reused meanwhile) before the zygote goes.
    Sessions still in Python hold their own locks and run on, as they always did."""
    import signal
    import time

    from gokku.runner import GRACE_SECONDS

    def running() -> list[int]:
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return [pid for pid in pids if os.waitid(os.P_PID, pid, flags) is None]

    for signals in ((signal.SIGHUP, signal.SIGCONT), (signal.SIGTERM,), (signal.SIGKILL,)):
        for pid in pids:
            for signum in signals:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signum)
        deadline = time.monotonic() + GRACE_SECONDS
        while signals[0] != signal.SIGKILL and running() and time.monotonic() < deadline:
            time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)


def _fork(
    message: dict, fds: list[int], root: str, base_env: dict[str, str], nofile: int, owned: tuple
) -> tuple[int, socket.socket]:
    """Fork the session ``message`` asks for: its pid, and our end of its line."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        pid = os.fork()
        if pid == 0:
            argv = door_argv(root, message["fingerprint"])
            _session(argv, message, [*fds, theirs.fileno()], base_env, nofile, (*owned, ours))
    except OSError:
        ours.close()
        raise
    finally:
        theirs.close()
    return pid, ours


def _session(
    argv: list[str],
    request: dict,
    fds: list[int],
    base_env: dict[str, str],
    nofile: int,
    inherited: tuple,
) -> NoReturn:
    """The child: become the session's process, run the door's command, exit with its code."""
    code = 1
    try:
        for owned in inherited:  # closed as objects, so none closes a reused fd later
            owned.close()
        _name(SESSION_NAME)
        os.setsid()
        for target, fd in enumerate(fds):
            if fd != target:
                os.dup2(fd, target)
        os.set_inheritable(3, False)  # the line to the server: no script inherits it
        os.closerange(4, os.sysconf("SC_OPEN_MAX"))  # received fds, other sessions' pidfds
        from gokku.ssh import handover

        handover.take(3)
        become_session(nofile, request["pty"])
        os.environ.clear()
        os.environ.update(base_env)
        os.environ.update(request["env"])
        sys.stdout.reconfigure(line_buffering=os.isatty(1))  # as a new interpreter would
        sys.argv = [sys.argv[0], *argv]
        from gokku.cli import main

        code = main(argv)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def _name(name: str) -> None:
    """The process name ``ps -o comm`` and ``top`` show: the zygote and its sessions share
    one command line."""
    with open("/proc/self/comm", "w") as comm:
        comm.write(name)


def main() -> None:
    """``python -m gokku.ssh.zygote ROOT FD NOFILE``: ROOT is the state the server serves,
    FD this end of its socketpair, NOFILE the descriptor limit its sessions get."""
    root, fd, nofile = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    _name(ZYGOTE_NAME)
    sock = socket.socket(fileno=fd)
    preload()
    serve(sock, root, nofile)


if __name__ == "__main__":
    main()
