"""How a server worker starts a session's process: forked by its zygote
(``gokku.ssh.zygote``), else as a new interpreter, as sshd runs the forced command.

The zygote is started with the worker and again whenever it dies (after RESPAWN_SECONDS);
while there is none, sessions take the slower way, so a session never depends on it.
Both ways give the session the same process: ``gokku ssh-command`` in a session and
process group of its own, with the same arguments, environment and terminal. The session
handles either through ``Worker``: its pid, signals, its exit code (negative for a
signal, as ``asyncio.subprocess``).

A forked process is signalled through a pidfd the zygote passes along, so a signal
never reaches a recycled pid. Its exit code comes from the zygote, its parent; if the
zygote dies first the code is lost: the session ends, once the process has, with
LOST_STATUS (its audit line too, when it had become its script). What the process says
before it execs its script or exits (``gokku.ssh.handover``), with the locks it hands
over, comes on a line of its own whose end the zygote passes along with the pid: the
worker reads it, not the zygote, so that a zygote that dies takes neither a lock from a
script still running nor a session's audit line.

A zygote that stops answering (stopped, wedged) holds both the sessions waiting to start
and the exit codes of those it forked, so it is asked for a sign of life every
PING_SECONDS while it runs, requests or not; silent for SILENT_SECONDS, it is killed and
replaced.
"""

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

from gokku.paths import Root
from gokku.redact import Masker
from gokku.runner import GRACE_SECONDS
from gokku.ssh import door_argv, gokku_argv, handover, zygote
from gokku.storage import release_lock_fd

log = logging.getLogger("gokku.serve")

# The first sessions wait this long for a starting zygote; one not ready by then is
# killed and replaced (its imports take a fraction of a second).
READY_SECONDS = 10.0
# A zygote that answers no ping for this long is stuck (stopped, wedged): it is killed
# and replaced. Busy, it answers every few milliseconds; noticed within 2 s in all. One
# that is silent but still gets the CPU (a burst of forks on a starved host: seen once,
# its sessions cut off) is given up to BUSY_SECONDS.
PING_SECONDS = 0.25
SILENT_SECONDS = 1.5
BUSY_SECONDS = 30.0
RESPAWN_SECONDS = 1.0
STOP_SECONDS = 5.0
LOST_STATUS = 1


class Worker(Protocol):
    pid: int

    @property
    def returncode(self) -> int | None: ...

    def send_signal(self, signum: int) -> None: ...

    async def wait(self) -> int: ...


class ZygoteLost(Exception):
    """The zygote died (or was killed, stuck) with a request in flight: whether it forked
    is unknown, so the session is not started again another way (its command could run
    twice); the client is told so."""


def clean_env() -> dict[str, str]:
    """The server's environment without what sshd would set per session."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("SSH_", "TERM"))}


def _waiting(sock: socket.socket) -> Iterator[tuple[dict | None, list[int]]]:
    """The messages waiting on a non-blocking ``sock`` (the zygote's, or a session's
    line), each with its descriptors; then (None, []) if it has ended."""
    while True:
        try:
            message, fds = zygote.receive(sock, zygote.MAX_LOCKS)
        except (BlockingIOError, InterruptedError):
            return
        except (OSError, ValueError):
            message, fds = None, []
        yield message, fds
        if message is None:
            return


class Forked:
    """A session's process forked by the zygote.

    Once it has handed its command over (``gokku.ssh.handover``: it became the script),
    ``handover`` holds what it said (its audit line, when it started) and this holds its
    locks until it exits; signals go to its process group (its pid: it leads its own
    session), and a hang-up is escalated as the runner does: HUP (with CONT), then TERM,
    then KILL, GRACE_SECONDS apart, and KILL for what is left of the group once the
    script has exited."""

    def __init__(self, pid: int, pidfd: int, line: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self.handover: dict | None = None
        self._pidfd = pidfd
        self._locks: list[int] = []
        self._execd = False
        self._hung_up = False
        self._hup_asked = False  # a hang-up was asked, maybe before the exec was known
        self._masked: tuple[Masker, dict[int, int]] | None = None  # pipes not yet relayed
        self._on_masked: Callable[[Masker, dict[int, int]], None] | None = None
        self._escalation: asyncio.TimerHandle | None = None
        self._exited = asyncio.get_running_loop().create_future()
        self._line: socket.socket | None = socket.socket(fileno=line)
        self._line.setblocking(False)
        asyncio.get_running_loop().add_reader(self._line, self._read_line)

    def send_signal(self, signum: int) -> None:
        if self.returncode is None:
            self._hup_asked = self._hup_asked or signum == signal.SIGHUP
            with contextlib.suppress(ProcessLookupError):
                if not self._execd:
                    signal.pidfd_send_signal(self._pidfd, signum)
                elif signum == signal.SIGHUP:
                    self._hang_up()
                else:
                    self._to_group(signum)

    def _read_line(self) -> None:
        """What the process said on its line so far, each message in turn; the line is
        closed at its end (the process exec'd its script, or exited)."""
        if self._line is None:
            return
        for message, fds in _waiting(self._line):
            if message is None:
                self._close_line()
            else:
                self.handed_over(message, fds)

    def _close_line(self) -> None:
        if self._line is not None:
            asyncio.get_running_loop().remove_reader(self._line)
            self._line.close()
            self._line = None

    def handed_over(self, message: dict, fds: list[int]) -> None:
        """What the process said before it exec'd (or at its end); the last word counts.

        The script may run (and its client go away) before this worker reads it: a
        hang-up asked meanwhile reached only the process, as it was then, and is made the
        group's now. Output pipes that come with it are the script's, to be masked
        (``when_masked``)."""
        mask, pipes, locks = handover.masked_pipes(message, fds)
        self.handover = message
        self._locks += locks
        if pipes:
            self._masked = (mask, pipes)
            self._start_masked()
        self._execd = self._execd or bool(message.get("exec"))
        if self._execd and self._hup_asked and self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._hang_up()

    def when_masked(self, start: Callable[[Masker, dict[int, int]], None]) -> None:
        """``start(mask, pipes)`` once the script's masked output pipes are here (now,
        if they came before this was asked): the session relays them."""
        self._on_masked = start
        self._start_masked()

    def _start_masked(self) -> None:
        if self._masked is not None and self._on_masked is not None:
            mask, pipes = self._masked
            self._masked = None
            self._on_masked(mask, pipes)

    def _to_group(self, signum: int) -> None:
        """Signal the script's group: only while its leader is ours (the pidfd says so;
        the group lives on its number only while it has members)."""
        signal.pidfd_send_signal(self._pidfd, 0)  # ProcessLookupError once it is reaped
        os.killpg(self.pid, signum)

    def _hang_up(self) -> None:
        if self._hung_up:
            return
        self._hung_up = True
        for signum in (signal.SIGHUP, signal.SIGCONT):
            self._to_group(signum)
        self._escalate(iter((signal.SIGTERM, signal.SIGKILL)))

    def _escalate(self, steps: Iterator[int]) -> None:
        self._escalation = None
        if self.returncode is not None:
            return
        signum = next(steps, None)
        if signum is not None:
            loop = asyncio.get_running_loop()
            self._escalation = loop.call_later(GRACE_SECONDS, self._step, signum, steps)

    def _step(self, signum: int, steps: Iterator[int]) -> None:
        with contextlib.suppress(ProcessLookupError):
            self._to_group(signum)
        self._escalate(steps)

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def exited(self, code: int) -> None:
        if self.returncode is None:
            self._read_line()  # all it said before its exit: it is in the line already
            self._close_line()
            if self._hung_up:  # what the script left running in its group goes with it
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(self.pid, signal.SIGKILL)
            if self._escalation is not None:
                self._escalation.cancel()
            for fd in self._locks:
                release_lock_fd(fd)
            self._locks = []
            # Masked output pipes not yet taken stay for the session (``when_masked``):
            # the exit can come in the same read as the hand-over, before the session has
            # its worker, and what the script wrote is still in them.
            self.returncode = code
            self._exited.set_result(code)
            asyncio.get_running_loop().remove_reader(self._pidfd)
            os.close(self._pidfd)

    def orphaned(self) -> None:
        """The zygote is gone: end with LOST_STATUS once the process has ended."""
        if self.returncode is None:
            loop = asyncio.get_running_loop()
            loop.add_reader(self._pidfd, self.exited, LOST_STATUS)


class Spawner:
    """This worker's way to start sessions, and its zygote."""

    def __init__(self, root: Root, session_nofile: int) -> None:
        self._root = str(root.path)
        self._nofile = session_nofile
        self._loop = asyncio.get_running_loop()
        self._process: asyncio.subprocess.Process | None = None
        self._sock: socket.socket | None = None
        self._ready = False  # the zygote said it takes requests
        self._settled: asyncio.Future[None] | None = None  # ready, or gone already
        self._requests: dict[int, asyncio.Future] = {}
        self._running: dict[int, Forked] = {}
        self._next_id = 0
        self._closing = False
        self._starting: asyncio.Future | None = None
        self._asked: float | None = None  # when the ping it has not answered yet was sent
        self._progress = (0.0, -1)  # when the zygote's CPU time last grew, and its ticks
        self._pinger: asyncio.TimerHandle | None = None

    async def start(self) -> None:
        """Start the zygote and wait (a little) until it takes requests."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = await asyncio.create_subprocess_exec(
                *gokku_argv(zygote.__name__),
                self._root,
                str(theirs.fileno()),
                str(self._nofile),
                pass_fds=[theirs.fileno()],
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                env=clean_env(),
                start_new_session=True,  # a Ctrl-C at the server's terminal is not for it
            )
        except OSError:
            ours.close()
            log.exception("cannot start the session runner: sessions start interpreters")
            self._respawn_later()
            return
        finally:
            theirs.close()
        ours.setblocking(False)
        self._sock = ours
        self._settled = self._loop.create_future()
        self._loop.add_reader(ours, self._readable)
        try:
            await asyncio.wait_for(asyncio.shield(self._settled), READY_SECONDS)
        except TimeoutError:  # hung in its imports, or stopped: sessions meanwhile exec
            log.warning("the session runner was not ready in %.0f s: replacing it", READY_SECONDS)
            self._kill()

    async def spawn(
        self, fingerprint: str, env: dict[str, str], fds: tuple[int, int, int], pty: bool
    ) -> Worker:
        """Start ``gokku ssh-command`` for the key on ``fds`` with ``env`` added."""
        if self._sock is not None and self._ready:
            self._next_id += 1
            request = {"id": self._next_id, "fingerprint": fingerprint, "env": env, "pty": pty}
            answer = self._loop.create_future()
            self._requests[self._next_id] = answer
            try:
                zygote.send(self._sock, request, list(fds))
            except OSError as exc:  # it is gone (or the request too large): nothing forked
                self._requests.pop(self._next_id)
                log.warning("session runner refused a request (%s): starting an interpreter", exc)
            else:
                worker = await answer
                if worker is not None:
                    return worker
        return await self._exec(fingerprint, env, fds, pty)

    async def _exec(
        self, fingerprint: str, env: dict[str, str], fds: tuple[int, int, int], pty: bool
    ) -> Worker:
        return await asyncio.create_subprocess_exec(
            *gokku_argv(),
            *door_argv(self._root, fingerprint),
            stdin=fds[0],
            stdout=fds[1],
            stderr=fds[2],
            env=clean_env() | env,
            start_new_session=True,
            preexec_fn=functools.partial(zygote.become_session, self._nofile, pty),
        )

    def _readable(self) -> None:
        assert self._sock is not None
        for message, fds in _waiting(self._sock):
            if message is None:
                self._lost()
                return
            self._asked = None
            self._handle(message, fds)

    def _handle(self, message: dict, fds: list[int]) -> None:
        if zygote.PONG in message:
            return
        if zygote.READY in message:
            self._ready = True
            self._settle()
            self._ping()
        elif "status" in message:
            worker = self._running.pop(message["pid"], None)
            if worker is not None:
                worker.exited(message["status"])
        else:
            answer = self._requests.pop(message["id"])
            if "pid" in message:
                worker = Forked(message["pid"], *fds)
                self._running[worker.pid] = worker
                answer.set_result(worker)
            else:
                log.warning("session runner could not fork (%s)", message.get("error"))
                answer.set_result(None)

    def _ping(self) -> None:
        """Ask the zygote for a sign of life, every PING_SECONDS from when it is ready; kill
        it once silent for SILENT_SECONDS: ``_lost`` then fails what it was asked, lets
        the sessions it forked end without it, and starts another."""
        self._pinger = None
        if self._sock is not None:
            self._readable()  # answers that came while this loop was busy count
        if self._sock is None:
            return
        now = self._loop.time()
        if self._asked is None:
            self._asked, self._progress = now, (now, self._cpu()[0])
            with contextlib.suppress(OSError):  # its queue is full: it stays unanswered
                zygote.send(self._sock, {zygote.PING: True})
        elif now - self._asked >= SILENT_SECONDS and not self._busy(now):
            silent = now - self._asked
            log.warning("the session runner has not answered for %.1f s: replacing it", silent)
            self._kill()
            return
        self._pinger = self._loop.call_later(PING_SECONDS, self._ping)

    def _busy(self, now: float) -> bool:
        """Whether the silent zygote got (or waited for) the CPU within the last
        SILENT_SECONDS, and has not been silent for BUSY_SECONDS: starved, not stuck."""
        ticks, runnable = self._cpu()
        if runnable or ticks > self._progress[1] >= 0:
            self._progress = (now, ticks)
        return now - self._progress[0] < SILENT_SECONDS and now - self._asked < BUSY_SECONDS

    def _cpu(self) -> tuple[int, bool]:
        """The zygote's CPU time so far in clock ticks (-1: unknown), and whether it is
        runnable (waiting for a CPU on a starved host is not being stuck)."""
        with contextlib.suppress(OSError, ValueError, IndexError, AttributeError):
            fields = Path(f"/proc/{self._process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12]), fields[0] == "R"
        return -1, False

    def _kill(self) -> None:
        """Kill the zygote: its socket closes, and ``_lost`` takes it from there."""
        if self._process is not None:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()

    def _lost(self) -> None:
        """The zygote is gone: fail what it was asked, watch what it started, replace it."""
        if self._sock is not None:
            self._loop.remove_reader(self._sock)
            self._sock.close()
            self._sock = None
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        self._ready = False
        self._settle()
        for answer in self._requests.values():
            answer.set_exception(ZygoteLost("the session runner failed while starting it"))
        self._requests.clear()
        for worker in self._running.values():
            worker.orphaned()
        self._running.clear()
        if not self._closing:
            log.warning("the session runner died: starting another")
            self._respawn_later()

    def _settle(self) -> None:
        if self._settled is not None and not self._settled.done():
            self._settled.set_result(None)

    def _respawn_later(self) -> None:
        if not self._closing:
            self._loop.call_later(RESPAWN_SECONDS, self._respawn)

    def _respawn(self) -> None:
        if not self._closing and self._sock is None:
            self._starting = asyncio.ensure_future(self.start())  # kept: a task is weakly held

    async def close(self) -> None:
        """Stop the zygote: it exits when its socket closes."""
        self._closing = True
        process = self._process
        self._lost()
        if process is not None:
            try:
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()
