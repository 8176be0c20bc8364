"""A session forked by the zygote hands its command over to the server worker.

A session held open must not cost a Python process: where nothing of Gokku has to sit in
the script's streams, the session's process, once it has routed the command, checked
access and taken the locks, becomes the script (``exec``) instead of waiting for it. What
it would have done after the script is then done by the server worker, which holds the
channel and learns the exit from the zygote: it writes the audit line (it counts the
bytes it relays, so no relay runs in the session at all), holds the locks until the
script exits (their descriptors are passed on; the script's own copies close at exec,
so nothing it starts keeps them), and signals the script's group itself, a hang-up
escalated HUP, TERM, KILL as the runner does (``gokku.ssh.spawn``).

A caller who may only read a service gets the script's output masked (``gokku.redact``):
then the script writes into pipes of its own, whose read ends go to the worker with the
hand-over, and the worker masks what it relays. Until the worker has them, nobody reads
what the script writes, so nothing reaches the client unmasked, however late the worker
reads the hand-over. Not on a terminal: there the output must go through the session's
pty.

The line to the worker is a socket the zygote made for this session (fd 3 until it is
taken, close-on-exec), whose other end it passed to the worker with the session's pid:
what is said on it waits there for the worker, so a session that ends right after
(killed -9, or a script that exits at once) still gets its one audit line, even if the
zygote dies meanwhile. A session without it (OpenSSH's door, the local CLI, a session
started as a new interpreter) runs everything itself as before.
"""

import contextlib
import json
import os
import signal
import socket
from collections.abc import Iterator

from gokku import audit
from gokku.errors import GokkuError
from gokku.redact import Masker
from gokku.ssh.relay import Counts, Streams
from gokku.storage import held_lock_fds

_channel: socket.socket | None = None
_entry: audit.Entry | None = None
_started = 0.0
_mask: tuple[Masker, tuple[int, ...]] | None = None  # the masker, and the streams it masks
# What the script starts with at default, as after the runner's Popen: the signals the
# runner forwards (exec resets a handled one), those Python ignores (SIGPIPE, SIGXFSZ).
DEFAULT_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
    signal.SIGPIPE,
    signal.SIGXFSZ,
)


def take(fd: int) -> None:
    """In the zygote's child: ``fd`` is the line to the worker."""
    global _channel
    _channel = socket.socket(fileno=fd)


def active() -> bool:
    return _channel is not None


def begin(entry: audit.Entry, started: float) -> None:
    """The audit line of this session, as the door fills it in (``time.monotonic``
    start: one clock for every process of the machine)."""
    global _entry, _started
    _entry, _started = entry, started


@contextlib.contextmanager
def direct() -> Iterator[Streams]:
    """The session's own descriptors as the request's streams: the worker counts bytes."""
    opened = [os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb"), os.fdopen(os.dup(2), "wb")]
    try:
        yield Streams(*opened, Counts())
    finally:
        for handle in opened:
            with contextlib.suppress(OSError):
                handle.close()


def can_exec(fds: tuple[int, int, int]) -> bool:
    """Whether a command on ``fds`` may become this process: only on the session's very
    own streams (nothing of ours, a masker or a relay, in between)."""
    if _channel is None or _entry is None:
        return False
    try:
        return all(os.path.samestat(os.fstat(fd), os.fstat(n)) for n, fd in enumerate(fds))
    except OSError:
        return False


def mask_here(fds: tuple[int, int, int], mask: Masker, stdout: bool) -> bool:
    """Whether the worker will mask this command's stderr (and stdout, when ``stdout``):
    when it may become this process and none of its streams is a terminal."""
    global _mask
    if not can_exec(fds) or any(os.isatty(fd) for fd in fds):
        return False
    _mask = (mask, (1, 2) if stdout else (2,))
    return True


def masked_pipes(message: dict, fds: list[int]) -> tuple[Masker, dict[int, int], list[int]]:
    """In the worker: what a hand-over ``message`` says of masking (``mask_here``), the
    script's output pipes by stream (1, 2) taken off the end of ``fds``, and the rest of
    ``fds`` (the locks)."""
    spec = message.get("mask")
    if not spec:
        return Masker(), {}, fds
    streams = spec["streams"]
    mask = Masker(
        tuple(value.encode("latin-1") for value in spec["values"]),
        tuple(field.encode("latin-1") for field in spec["fields"]),
    )
    split = len(fds) - len(streams)
    return mask, dict(zip(streams, fds[split:], strict=True)), fds[:split]


def finish(entry: audit.Entry) -> bool:
    """The command ran here to its end: its line, for the worker to write. False when
    it cannot be passed on (the zygote died): the caller writes it."""
    return _send({"audit": vars(entry)}, [])


def exec_command(command: list[str], cwd: str, env: dict[str, str]) -> None:
    """Become ``command``; the worker is told first (the line, the start, the locks).

    Signals the script should start at default are set so before the worker learns it
    may signal the group: one arriving before the exec ends this process as it would
    have ended the script. Returns when the worker cannot be told (it is gone, and the
    zygote with it): the caller waits for the command itself. OSError when the exec
    fails: the caller reports it, and the session ends as any other, its ``finish`` the
    last word."""
    assert _entry is not None
    # Held back until the worker is told: one that came in between (Ctrl-C from the pty)
    # would end this process with no word to the worker, and the session with no line.
    mask_before = signal.pthread_sigmask(signal.SIG_BLOCK, DEFAULT_SIGNALS)
    saved = {signum: signal.signal(signum, signal.SIG_DFL) for signum in DEFAULT_SIGNALS}
    message = {"audit": vars(_entry), "started": _started, "exec": True}
    pipes = {}
    if _mask is not None:
        mask, streams = _mask
        pipes = {stream: os.pipe() for stream in streams}
        message["mask"] = {
            "values": [value.decode("latin-1") for value in mask.values],
            "fields": [field.decode("latin-1") for field in mask.fields],
            "streams": list(streams),
        }
    readers = [read for read, _ in pipes.values()]
    sent = _send(message, [*held_lock_fds(), *readers])
    for read in readers:
        os.close(read)
    if not sent:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask_before)
        for _, write in pipes.values():
            os.close(write)
        if pipes:  # the output would go out unmasked: better none
            raise GokkuError("the server is restarting: try again")
        return
    for stream, (_, write) in pipes.items():
        os.dup2(write, stream)
        os.close(write)
    os.chdir(cwd)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask_before)  # what came meanwhile ends us now
    os.execvpe(command[0], command, env)


def _send(message: dict, fds: list[int]) -> bool:
    """To the worker, on the line (one datagram, as the zygote's own messages)."""
    if _channel is None:
        return False
    try:
        socket.send_fds(_channel, [json.dumps(message).encode()], fds)
    except OSError:
        return False
    return True
