"""One SSH session of the embedded server, wired to a worker process.

The worker is ``gokku ssh-command``, run as sshd would run the forced command (same
``SSH_ORIGINAL_COMMAND``, ``SSH_CONNECTION``, ``TERM``), so both doors share one path
from command string to dispatcher and audit line; it is forked by the server worker's
zygote, or started as a new interpreter when there is none (``gokku.ssh.spawn``).

The wiring avoids the asyncssh calls that lose data or hang (notes/asyncssh.md): stdin is
copied by our own coroutine and closed for EOF; stdout and stderr are read from raw pipe
(or pty) descriptors by our own coroutines that wait for the channel to drain; signals
and window changes go straight to the worker and the pty instead of through a stream; a
closed channel hangs the worker up (SIGHUP, which it turns into HUP/TERM/KILL of the
script's group; ``gokku.ssh.spawn`` does that itself for a worker that became its
script); the exit status is always sent. For a worker forked by the zygote, the bytes
are counted here and the audit line written here (``gokku.ssh.handover``).

Only the client's own end of input (its EOF) closes the worker's stdin. A connection that
is lost (the client killed, the network gone) leaves it open until the worker, hung up,
has exited: a command reading an upload is killed with it, it never sees a cut-off upload
end as if it were whole.
"""

import asyncio
import contextlib
import fcntl
import logging
import os
import pty
import signal
import struct
import termios
import time
from collections.abc import Callable

from gokku import audit, keys
from gokku.errors import AuditFailed, GokkuError
from gokku.paths import Root
from gokku.plugins.manifest import CommandIO
from gokku.redact import Masker, Stream
from gokku.ssh import channeldata, split_command
from gokku.ssh.relay import pipe
from gokku.ssh.spawn import Spawner, Worker, ZygoteLost
from gokku.ssh.sshlib import asyncssh

log = logging.getLogger("gokku.serve")

CHUNK = 256 << 10
DRAIN_SECONDS = 5.0  # after the worker exits: output still queued, or held by a grandchild
KEYS = {b"\x03": "INT", b"\x1c": "QUIT"}
SIGNALS = {
    name: getattr(signal, "SIG" + name) for name in ("INT", "QUIT", "TERM", "HUP", "USR1", "USR2")
}


class Session(asyncssh.SSHServerProcess):
    def __init__(self, root: Root, key: keys.Key, address: str, spawner: Spawner):
        super().__init__(self._main, None, 0, False)
        self._root = root
        self._key = key
        self._address = address
        self._spawner = spawner
        self._worker: Worker | None = None
        self._master: int | None = None
        self._done: list[Callable[[], None]] = []
        self._started = False
        self._keys_signal = False
        self._early_signals: list[int] = []
        self._lost = False  # the channel closed (the client or its connection gone)
        self._client_eof = False  # the client said its input ended, before any loss
        self._counted = [0, 0]  # bytes in, bytes out (for an audit line written here)

    def add_done_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the session is over: its worker gone, or never started."""
        self._done.append(callback)

    def _finished(self) -> None:
        while self._done:
            self._done.pop()()

    # Channel requests arriving while the command runs.

    def signal_received(self, name: str) -> None:
        """To the worker; one that arrives while it is being started, once it is."""
        signum = SIGNALS.get(name)
        if not signum:
            return
        if self._worker is None:
            self._early_signals.append(signum)
        elif self._worker.returncode is None:
            self._worker.send_signal(signum)

    def terminal_size_changed(self, width: int, height: int, pixw: int, pixh: int) -> None:
        if self._master is not None:
            _set_size(self._master, width, height, pixw, pixh)

    def break_received(self, msec: int) -> bool:
        return False

    def eof_received(self) -> bool:
        self._client_eof = not self._lost  # asyncssh also calls this when the channel is lost
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        super().connection_lost(exc)
        if not self._started:
            self._finished()

    # The session itself.

    async def _main(self, _process: asyncssh.SSHServerProcess) -> None:
        self._started = True
        code = 1
        try:
            code = await self._run()
        except ZygoteLost as exc:
            with contextlib.suppress(Exception):
                await self._refuse(f"{exc}; check whether it ran before running it again")
        except Exception:
            log.exception("session of %s from %s failed", self._key.name, self._address)
        finally:
            # Its slot is free before its status goes: a worker paused between the two
            # (a busy host) let the client's next session, on another worker, find it
            # still taken.
            self._finished()
            with contextlib.suppress(Exception):
                self.exit(code)

    async def _run(self) -> int:
        if self.subsystem is not None:
            await self._refuse(f"subsystem {self.subsystem!r} is not available; run commands")
            return 1
        if "\0" in (self.command or ""):
            # No argument can carry one (argv and the environment end strings at NUL).
            await self._refuse("a command cannot hold a NUL byte")
            return 2
        io = self._io()
        use_pty = self.term_type is not None and io.pty_allowed
        # A client that asked for a terminal has its own in raw mode: Ctrl-C arrives as a
        # byte. Without the pty that would have made it a signal, do that here (unless the
        # command reads data, where 0x03 is just a byte).
        self._keys_signal = self.term_type is not None and not use_pty and io.stdin != "data"
        if use_pty:
            master, slave = pty.openpty()
            self._master = os.dup(master)  # for window changes; the pumps own theirs
            _set_size(master, *self.term_size)
            child = (slave, slave, slave)
            ours = {"in": os.dup(master), "out": master}  # each pump closes its own fd
        else:
            in_r, in_w = pipe()
            out_r, out_w = pipe()
            err_r, err_w = os.pipe()
            child = (in_r, out_w, err_w)
            ours = {"in": in_w, "out": out_r, "err": err_r}
        try:
            for fd in ours.values():
                os.set_blocking(fd, False)
            worker = await self._start(child, use_pty)
        except BaseException:
            for fd in ours.values():
                os.close(fd)
            raise
        finally:
            for fd in set(child):
                os.close(fd)
        self._worker = worker
        for signum in self._early_signals:
            worker.send_signal(signum)
        outputs = [asyncio.create_task(_pump_out(ours["out"], self.stdout, self._count_out))]
        if "err" in ours:
            errors = _pump_out(ours["err"], self.stderr, self._count_out)
            outputs.append(asyncio.create_task(errors))

        def masked(mask: Masker, pipes: dict[int, int]) -> None:
            """The script's own output, which only a caller who may read gets, masked."""
            for stream, fd in pipes.items():
                os.set_blocking(fd, False)
                writer = self.stdout if stream == 1 else self.stderr
                relay = _pump_out(fd, writer, self._count_out, Stream(mask))
                outputs.append(asyncio.create_task(relay))

        if hasattr(worker, "when_masked"):
            worker.when_masked(masked)
        feeding = asyncio.create_task(self._pump_in(ours["in"]))
        watching = asyncio.create_task(self._hang_up_when_closed(worker))
        try:
            status = await worker.wait()
            await asyncio.wait(outputs, timeout=DRAIN_SECONDS)
        finally:
            for task in (feeding, watching, *outputs):
                task.cancel()
            await asyncio.gather(feeding, watching, *outputs, return_exceptions=True)
            if self._master is not None:
                os.close(self._master)
                self._master = None
        code = 128 - status if status < 0 else status
        handover = getattr(worker, "handover", None)
        if handover is not None:
            await self._audit(handover, code, None if use_pty else self._counted)
        return code

    async def _audit(self, handover: dict, code: int, counted: list[int] | None) -> None:
        """The audit line of a session that handed its command over (``gokku.ssh.handover``):
        as it said, with the exit and duration of a script it became, and the bytes
        relayed here (none through a terminal, as the door counts them)."""
        entry = audit.Entry(**handover["audit"])
        if entry.exit is None:
            entry.exit = code
        if entry.duration is None:
            entry.duration = round(time.monotonic() - handover["started"], 3)
        if counted is not None:
            entry.bytes_in, entry.bytes_out = counted
        try:
            await asyncio.to_thread(audit.write, self._root, entry)
        except AuditFailed as exc:  # the command's own result stands; the client is told
            with contextlib.suppress(Exception):
                await self._refuse(exc.message)

    def _io(self) -> CommandIO:
        """How the command uses its streams: a pty only for those that may have one."""
        from gokku.dispatcher import command_io

        try:
            argv = split_command(self.command or "")
        except GokkuError:
            return CommandIO()  # the worker reports the error
        return command_io(argv, self._root)

    async def _start(self, fds: tuple[int, int, int], use_pty: bool) -> Worker:
        """The worker, with the variables sshd would set for this session."""
        sock = self.get_extra_info("sockname") or ("", 0)
        peer = self.get_extra_info("peername") or ("", 0)
        env = {"SSH_CONNECTION": f"{peer[0]} {peer[1]} {sock[0]} {sock[1]}"}
        if self.command is not None:
            env["SSH_ORIGINAL_COMMAND"] = self.command
        if use_pty:
            env["TERM"] = self.term_type or "xterm"
        return await self._spawner.spawn(self._key.fingerprint, env, fds, use_pty)

    async def _refuse(self, message: str) -> None:
        self.stderr.write(f" !     {message}\n".encode())
        await self.stderr.drain()

    async def _pump_in(self, fd: int) -> None:
        """Client → worker; closing the pipe at the end delivers EOF, if the client sent
        one. Otherwise the pipe stays open until ``_run`` cancels this once the worker has
        exited (``_hang_up_when_closed`` hangs it up)."""
        try:
            while data := await self._read_in():
                if self._keys_signal:
                    data = self._signal_keys(data)
                await _write_all(fd, data)
                self._counted[0] += len(data)
            if not self._client_eof:
                await asyncio.get_running_loop().create_future()
        except OSError:
            pass  # the worker closed its stdin: nothing more to deliver
        finally:
            os.close(fd)

    async def _read_in(self) -> bytes:
        """The client's next bytes; b"" at the end of input, or when the channel broke."""
        try:
            return await self.stdin.read(CHUNK)
        except (OSError, asyncssh.Error):
            return b""

    def _count_out(self, n: int) -> None:
        self._counted[1] += n

    def _signal_keys(self, data: bytes) -> bytes:
        """Ctrl-C and Ctrl-\\ typed at the client's raw terminal, as its pty would: the
        signals go to the worker (which passes them to the script), the bytes nowhere."""
        for key, name in KEYS.items():
            if key in data:
                self.signal_received(name)
                data = data.replace(key, b"")
        return data

    async def _hang_up_when_closed(self, worker: Worker) -> None:
        await self.channel.wait_closed()
        if worker.returncode is None:
            log.info("client of %s gone: hanging up pid %s", self._key.name, worker.pid)
            worker.send_signal(signal.SIGHUP)


def _set_size(fd: int, cols: int, rows: int, pixw: int = 0, pixh: int = 0) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, pixw, pixh))


async def _ready(fd: int, write: bool) -> None:
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    add, remove = (
        (loop.add_writer, loop.remove_writer) if write else (loop.add_reader, loop.remove_reader)
    )
    add(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await ready
    finally:
        remove(fd)


async def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            await _ready(fd, write=True)


async def _pump_out(
    fd: int,
    writer: asyncssh.SSHWriter,
    count: Callable[[int], None],
    mask: Stream | None = None,
) -> None:
    """Worker → client until end of output; waits for the channel so memory stays bounded.
    With ``mask``, what goes out is masked (``gokku.redact``), its last part at the end.

    Closing ``fd`` when the channel breaks matters: a writer blocked on a full pipe gets
    EPIPE instead of waiting forever for a reader that is gone.
    """
    try:
        while True:
            try:
                data = os.read(fd, CHUNK)
            except BlockingIOError:
                await _ready(fd, write=False)
                continue
            except OSError:
                data = b""  # EIO: the last holder of the pty slave closed it
            end = not data
            if mask is not None:
                data = mask.end() if end else mask.feed(data)
            if data:
                channeldata.write(writer, data)
                count(len(data))
                await writer.drain()
            if end:
                return
    except (BrokenPipeError, asyncssh.Error):
        return
    finally:
        os.close(fd)
