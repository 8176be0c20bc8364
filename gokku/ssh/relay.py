"""Counting relays between an SSH door's descriptors and the command it runs.

``gokku ssh-command`` puts a pipe between each non-terminal stream it was given (by sshd,
or by the embedded server when it started a new interpreter) and the command, and copies
the bytes itself. (A session forked by the zygote has none: the server worker counts the
bytes, see ``gokku.ssh.handover``.) That gives the
audit log its byte counts, and it notices the client going away even when the command is
silent: the door's end of stdout reports an error once nobody reads it any more, and the
relay then hangs this process up (SIGHUP), which the runner turns into HUP/TERM/KILL of
the script's whole process group. Terminals are handed over untouched; with a pty the
kernel itself hangs the session up.

Copying uses ``splice`` (no trip through user space) and falls back to read/write.
"""

import _thread
import contextlib
import errno
import fcntl
import os
import select
import signal
import threading
from collections.abc import Callable, Iterator
from typing import BinaryIO, NamedTuple

CHUNK = 1 << 20
PIPE_SIZE = 1 << 20
# Once the command has returned, output that stops arriving for this long is given up
# on: a background grandchild holding the pipe must not keep the session open.
LINGER_SECONDS = 0.5
ASYNC_SIGNALS = {
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGCHLD,
    signal.SIGWINCH,
}


class Counts:
    """Bytes relayed each way; None for a direction that went through a terminal."""

    def __init__(self) -> None:
        self.bytes_in: int | None = None
        self.bytes_out: int | None = None
        self._lock = threading.Lock()

    def add_in(self, n: int) -> None:
        self.bytes_in = (self.bytes_in or 0) + n

    def add_out(self, n: int) -> None:
        with self._lock:  # stdout and stderr relays both add here
            self.bytes_out = (self.bytes_out or 0) + n


class Streams(NamedTuple):
    """A session's three streams and the counts of the bytes relayed through them."""

    stdin: BinaryIO
    stdout: BinaryIO
    stderr: BinaryIO
    counts: Counts


def pipe() -> tuple[int, int]:
    """A pipe of PIPE_SIZE: fewer, larger reads and writes than the default 64 KiB
    (the embedded server's session pipes too, where each read costs Python time)."""
    r, w = os.pipe()
    with contextlib.suppress(OSError, AttributeError):
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
    return r, w


def _move(src: int, dst: int) -> int:
    """Copy up to CHUNK bytes; 0 at end of input. Raises OSError when dst is gone."""
    try:
        return os.splice(src, dst, CHUNK)
    except OSError as exc:
        if exc.errno != errno.EINVAL:
            raise
    data = os.read(src, CHUNK)
    view = memoryview(data)
    while view:
        view = view[os.write(dst, view) :]
    return len(data)


def _copy_in(src: int, dst: int, count: Callable[[int], None]) -> None:
    """Client → command until end of input; closing ``dst`` delivers the EOF."""
    try:
        while n := _move(src, dst):
            count(n)
    except OSError:
        pass  # the command closed its stdin, or the client vanished: nothing to deliver
    finally:
        os.close(dst)


def _copy_out(
    src: int,
    dst: int,
    count: Callable[[int], None],
    finished: threading.Event,
    gone: Callable[[], None],
) -> None:
    """Command → client until end of output, or until the client is gone."""
    poller = select.poll()
    poller.register(src, select.POLLIN)
    poller.register(dst, 0)  # only POLLERR/POLLHUP: the reader went away
    try:
        while True:
            events = dict(poller.poll(LINGER_SECONDS * 1000))
            if events.get(dst):
                gone()
                return
            if not events:
                if finished.is_set():
                    return
                continue
            n = _move(src, dst)
            if not n:
                return
            count(n)
    except OSError:
        gone()
    finally:
        os.close(src)


def _quiet(target: Callable[..., None], *args: object) -> None:
    """Run a relay with signals blocked: they must reach the main thread, which blocks
    them itself around spawning a script (see the runner) and forwards them after."""
    signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS)
    target(*args)


@contextlib.contextmanager
def relayed(fds: tuple[int, int, int] = (0, 1, 2)) -> Iterator[Streams]:
    """Yield the streams a command should use in place of ``fds``, with byte counts.

    On exit the command's output is drained (bounded) before returning.
    """
    finished = threading.Event()
    counts = Counts()
    drains: list[Callable[[], object]] = []
    opened: list[BinaryIO] = []

    def start(target: Callable[..., None], *args: object) -> Callable[[], object]:
        """Run a relay in a thread of its own; returns what waits for its end.

        ``threading.Thread.start`` waits until the new thread runs: three scheduler round
        trips before the command starts, each a few milliseconds on a busy host (and the
        largest part of a short command's session in the latency tail). These threads
        start on their own; like daemon threads, they never hold up the interpreter's
        exit."""
        over = _thread.allocate_lock()
        over.acquire()

        def run() -> None:
            try:
                _quiet(target, *args)
            finally:
                over.release()

        _thread.start_new_thread(run, ())
        return over.acquire

    def stream(fd: int, mode: str) -> BinaryIO:
        handle = os.fdopen(fd, mode)
        opened.append(handle)
        return handle

    def gone() -> None:
        if not finished.is_set():
            os.kill(os.getpid(), signal.SIGHUP)

    stdin_fd, stdout_fd, stderr_fd = fds
    if os.isatty(stdin_fd):
        stdin = stream(os.dup(stdin_fd), "rb")
    else:
        counts.bytes_in = 0
        r, w = pipe()
        start(_copy_in, stdin_fd, w, counts.add_in)  # may block on the client: not joined
        stdin = stream(r, "rb")
    outputs = []
    for fd in (stdout_fd, stderr_fd):
        if os.isatty(fd):
            outputs.append(stream(os.dup(fd), "wb"))
            continue
        counts.bytes_out = counts.bytes_out or 0
        r, w = pipe()
        drains.append(start(_copy_out, r, fd, counts.add_out, finished, gone))
        outputs.append(stream(w, "wb"))
    try:
        yield Streams(stdin, outputs[0], outputs[1], counts)
    finally:
        finished.set()
        for handle in opened:
            with contextlib.suppress(OSError):
                handle.close()
        for drained in drains:
            drained()
