"""The tests' CLI calls, forked from an interpreter that has already imported Gokku.

Tests set up their state through the real CLI (``plugins:add``, ``apps:create``,
``ssh-keys:add``): thousands of calls a run, each paying an interpreter's start and Gokku's
imports, about 50 ms of CPU, before its first line runs; on a two-core machine that was a
quarter of the suite's CPU. Here each call still runs in a process of its own, as ``python -m
gokku`` runs it: ``gokku/__main__.py`` with the caller's arguments, environment, working
directory and standard streams, its exit status the process's. What it skips is the start
of the interpreter, which the calls whose environment changes how an interpreter starts
(``LD_PRELOAD``, ``PYTHON*``, the locale) still pay: they run ``python -m gokku`` itself.
So does every start the tests do not make through ``Gokku`` (sshd's forced command, the
plugins' helper callbacks, the tests of the CLI's own start). The embedded door's ``gokku
serve`` is forked the same way (``start``), from a second server that has imported the
SSH server's modules as well: ready in 55 ms with 24 ms of CPU, against 200 and 160 for
a new interpreter (median of 8), about 150 times a run.

The server forks a manager per call, which forks the command and reports its pid, then its
exit status and CPU time; the server itself never runs a command, so each command starts
from the same freshly imported state."""

import contextlib
import json
import os
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
from pathlib import Path
from typing import BinaryIO

# The loader and the interpreter read these at their start (preloads, stdio encodings,
# paths, flags); a call that sets them gets an interpreter of its own.
STARTUP_VARIABLES = ("LD_", "PYTHON", "LC_", "LANG")
HEADER = struct.Struct("!Q")


class Forks:
    """One fork server, started on the first call and stopped with ``close``."""

    def __init__(self, folder: Path, env: dict[str, str], cwd: Path, ssh: bool = False) -> None:
        self.path = folder / "cliforks.sock"
        self.env = env
        self.cwd = cwd
        self.ssh = ssh  # the SSH server's modules imported too (``_import_gokku``)
        self.server: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.cpu = 0.0  # the CPU seconds of the commands run so far, their children's too

    def suits(self, env: dict[str, str], python: str) -> bool:
        """Whether a call with ``env`` meant for the interpreter ``python`` may be forked:
        the interpreter is the server's, and so are its start-up variables."""

        def startup(variables: dict[str, str]) -> dict[str, str]:
            return {k: v for k, v in variables.items() if k.startswith(STARTUP_VARIABLES)}

        return python == sys.executable and startup(env) == startup(self.env)

    def run(
        self, args: list[str], input: bytes, env: dict[str, str], timeout: float, cwd: Path
    ) -> tuple[int, bytes, bytes]:
        """Like ``subprocess.run(..., capture_output=True)``: the exit code (minus the
        signal for a killed command), stdout and stderr."""
        stdin_r, stdin_w = os.pipe()
        stdout_r, stdout_w = os.pipe()
        stderr_r, stderr_w = os.pipe()
        try:
            conn, replies, pid = self._request(args, env, cwd, [stdin_r, stdout_w, stderr_w])
        finally:
            for fd in (stdin_r, stdout_w, stderr_w):
                os.close(fd)
        with conn, replies:
            try:
                out, err = _communicate(stdin_w, stdout_r, stderr_r, input, timeout)
            except subprocess.TimeoutExpired:
                os.kill(pid, signal.SIGKILL)
                self._count(replies.readline())
                raise
            return self._count(replies.readline()), out, err

    def start(self, args: list[str], env: dict[str, str], cwd: Path, stderr: int) -> "Started":
        """Like ``subprocess.Popen`` with stdin and stdout on /dev/null: a command that
        runs on (a server), its stderr on ``stderr``."""
        with open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
            conn, replies, pid = self._request(
                args, env, cwd, [null_in.fileno(), null_out.fileno(), stderr]
            )
        return Started(self, conn, replies, pid)

    def _request(
        self, args: list[str], env: dict[str, str], cwd: Path, fds: list[int]
    ) -> tuple[socket.socket, BinaryIO, int]:
        """Have a command forked with ``fds`` as its stdin, stdout and stderr: the
        connection to its manager, the manager's replies, and the command's pid."""
        conn = self._connect()
        body = json.dumps({"args": args, "env": env, "cwd": str(cwd)}).encode()
        socket.send_fds(conn, [HEADER.pack(len(body))], fds)
        conn.sendall(body)
        replies = conn.makefile("rb")
        return conn, replies, int(replies.readline())

    def _count(self, reply: bytes) -> int:
        """The exit code in a manager's last reply; its CPU seconds added to ``cpu``."""
        code, cpu = reply.split()
        with self.lock:
            self.cpu += float(cpu)
        return int(code)

    def _connect(self) -> socket.socket:
        with self.lock:
            if self.server is None:
                self.server = subprocess.Popen(
                    [sys.executable, __file__, str(self.path), *(["--ssh"] if self.ssh else [])],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    env=self.env,
                    cwd=self.cwd,
                )
                assert self.server.stdout.readline() == b"ready\n", "the fork server did not start"
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(self.path))
        return conn

    def close(self) -> None:
        if self.server is not None:
            self.server.stdin.close()  # its end of the pipe: it stops
            self.server.wait(30)
            self.server.stdout.close()


class Started:
    """A command forked to run on (``Forks.start``): what ``sshlab.running_server`` uses of a
    Popen. Its manager's last reply is its exit status."""

    def __init__(self, forks: Forks, conn: socket.socket, replies: BinaryIO, pid: int) -> None:
        self.forks = forks
        self.conn = conn
        self.replies = replies
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.wait(0)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self.conn], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired("gokku", timeout or 0)
            self.returncode = self.forks._count(self.replies.readline())
            self.replies.close()
            self.conn.close()
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def _communicate(
    stdin: int, stdout: int, stderr: int, data: bytes, timeout: float
) -> tuple[bytes, bytes]:
    """Feed ``data`` and read both outputs to their end within ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    chunks: dict[int, list[bytes]] = {stdout: [], stderr: []}
    offset = 0
    with selectors.DefaultSelector() as selector:
        for fd in chunks:
            selector.register(fd, selectors.EVENT_READ)
        if data:
            os.set_blocking(stdin, False)
            selector.register(stdin, selectors.EVENT_WRITE)
        else:
            os.close(stdin)
        try:
            while selector.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise subprocess.TimeoutExpired("gokku", timeout)
                for key, _ in selector.select(left):
                    if key.fd == stdin:
                        try:
                            offset += os.write(stdin, data[offset : offset + 65536])
                        except BrokenPipeError:
                            offset = len(data)
                        done = offset >= len(data)
                    else:
                        chunk = os.read(key.fd, 65536)
                        chunks[key.fd].append(chunk)
                        done = not chunk
                    if done:
                        selector.unregister(key.fd)
                        os.close(key.fd)
        finally:
            for fd in list(selector.get_map()):
                os.close(fd)
    return b"".join(chunks[stdout]), b"".join(chunks[stderr])


def _serve(path: str, ssh: bool) -> None:
    """Import Gokku (``_import_gokku``), then fork a manager per connection until the
    tests' end of the stdin pipe closes."""
    _import_gokku(ssh)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    # Managers are reaped by the kernel: each reports its command's CPU time to the caller,
    # which counts it for its test (``--cpu-profile``), so the server must not count it too.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    sys.stdout.buffer.write(b"ready\n")
    sys.stdout.flush()
    with selectors.DefaultSelector() as selector:
        selector.register(listener, selectors.EVENT_READ)
        selector.register(0, selectors.EVENT_READ)
        while True:
            for key, _ in selector.select():
                if key.fd == 0:
                    return
                conn, _ = listener.accept()
                if os.fork() == 0:
                    listener.close()
                    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                    _manage(conn)
                conn.close()


def _import_gokku(ssh: bool) -> None:
    """Gokku's modules, imported once here rather than in each command: the CLI imports a
    command's modules when it runs it (a start that runs one command needs no more), and a
    call forked from an interpreter holding only the CLI's own spent three times the CPU
    of one forked from all of them (27 ms against 8, in the median command). All but the
    SSH server's (``gokku.ssh``, which brings asyncssh): the CLI's commands never need it,
    and a larger interpreter costs every fork more. Calls that start an interpreter of
    their own (sshd's forced command, the helpers' callbacks) still import lazily, as the
    CLI does. A fork server for ``gokku serve`` (``ssh``) has the SSH server's imported
    too: a third of a second of CPU at each server's start. Frozen out of the collector,
    so that a command's collections do not copy the server's pages."""
    import gc
    import importlib
    import pkgutil

    import gokku

    for module in pkgutil.walk_packages(gokku.__path__, "gokku."):
        # __main__ runs the CLI when imported.
        if not module.name.endswith(".__main__") and not module.name.startswith("gokku.ssh"):
            importlib.import_module(module.name)
    if ssh:
        importlib.import_module("gokku.ssh.server")
    gc.freeze()


def _manage(conn: socket.socket) -> None:
    """Fork the command, tell the caller its pid, then its exit status."""
    header, fds, _, _ = socket.recv_fds(conn, HEADER.size, 3)
    (size,) = HEADER.unpack(header)
    body = b""
    while len(body) < size:
        body += conn.recv(size - len(body))
    pid = os.fork()
    if pid == 0:
        conn.close()
        _command(json.loads(body), fds)
    for fd in fds:
        os.close(fd)
    conn.sendall(b"%d\n" % pid)
    _, status, usage = os.wait4(pid, 0)
    cpu = usage.ru_utime + usage.ru_stime
    conn.sendall(b"%d %.3f\n" % (os.waitstatus_to_exitcode(status), cpu))
    os._exit(0)


def _command(request: dict, fds: list[int]) -> None:
    """Become ``python -m gokku ARGS`` in ``cwd`` with ``env``, and end as it would."""
    import atexit
    import runpy
    import traceback

    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.path[0] = os.getcwd()  # what -m puts first
    code: int = 0
    try:
        sys.argv = ["gokku", *request["args"]]
        runpy.run_module("gokku", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            code = code or 120  # as the interpreter reports an unflushable stdout
    os._exit(code)


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2:] == ["--ssh"])
