"""Several server processes on one listening socket, and the connection counts they share.

One Python process encrypts on one core, so ``gokku serve`` forks ``workers`` copies of
itself after binding: each accepts from the same socket (whichever is free takes the
next connection) and serves its connections to the end. The parent only supervises:
it forwards the stop signals and starts a new worker when one dies.

The connection caps stay server-wide: every worker counts its own connections (in total
and per client address) in its own row of a shared memory table, and a worker admitting a
connection sums all rows. Two workers admitting at the same instant may each miss the
other's newest connection, so a cap can be passed by at most workers - 1. Connections and
sessions per key are counted the same way, each in two slots picked by two hashes of the
fingerprint; the lesser of the two sums is the count, so two keys share a count only if
both their slots collide (and a shared count only makes a cap stricter).

The same rows spread the load: a worker takes a new connection only while no other worker
has fewer (connections plus handshakes under way); otherwise it leaves it to them for a
moment. Four streams started together then land two and two on two workers instead of
wherever the kernel woke first.
"""

import hashlib
import logging
import mmap
import os
import signal
import time
import zlib
from collections.abc import Callable

log = logging.getLogger("gokku.serve")

ADDRESS_SLOTS = 4096  # addresses hash into these; a collision only makes a cap stricter
KEY_SLOTS = 4096  # per hash of a key's fingerprint (two hashes: see above)
# A row: connections in total, handshakes under way, connections per address slot, then
# per key slot its connections, and its sessions.
TOTAL, HANDSHAKES, FIRST_SLOT = 0, 1, 2
KEY_CONNECTIONS = FIRST_SLOT + ADDRESS_SLOTS
KEY_SESSIONS = KEY_CONNECTIONS + 2 * KEY_SLOTS
ROW = KEY_SESSIONS + 2 * KEY_SLOTS
RESPAWN_SECONDS = 1.0
# How long workers get to stop once told to (their sessions' hang-up, their zygote's end):
# one that has not stopped by then is killed, so that a stop always ends the server.
STOP_DEADLINE_SECONDS = 20.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


class Tally:
    """One worker's view of the shared table: writes its own row, reads all rows."""

    def __init__(self, cells: memoryview, workers: int, index: int) -> None:
        self._cells = cells
        self._workers = workers
        self._row = index * ROW

    def reset(self) -> None:
        """Forget what a previous worker in this row counted (it died with its connections)."""
        self._cells[self._row : self._row + ROW] = memoryview(bytes(4 * ROW)).cast("i")

    def total(self) -> int:
        return sum(self._cells[w * ROW + TOTAL] for w in range(self._workers))

    def from_address(self, address: str) -> int:
        slot = FIRST_SLOT + _slot(address)
        return sum(self._cells[w * ROW + slot] for w in range(self._workers))

    def add(self, address: str, delta: int) -> None:
        self._cells[self._row + TOTAL] += delta
        self._cells[self._row + FIRST_SLOT + _slot(address)] += delta

    def by_key(self, kind: int, fingerprint: str) -> int:
        """The key's connections (``kind`` KEY_CONNECTIONS) or sessions (KEY_SESSIONS)."""
        return min(
            sum(self._cells[w * ROW + kind + slot] for w in range(self._workers))
            for slot in _key_slots(fingerprint)
        )

    def add_key(self, kind: int, fingerprint: str, delta: int) -> None:
        for slot in _key_slots(fingerprint):
            self._cells[self._row + kind + slot] += delta

    def handshaking(self, delta: int) -> None:
        """Count a connection from accept() until its handshake ends (it is a connection
        too by then): the gap before it is admitted must not make this worker look idle."""
        self._cells[self._row + HANDSHAKES] += delta

    def least_loaded(self) -> bool:
        """Whether no other worker is serving fewer connections than this one."""
        loads = [
            self._cells[w * ROW + TOTAL] + self._cells[w * ROW + HANDSHAKES]
            for w in range(self._workers)
        ]
        return loads[self._row // ROW] <= min(loads)


def _slot(address: str) -> int:
    return zlib.crc32(address.encode()) % ADDRESS_SLOTS  # the same in every process


def _key_slots(fingerprint: str) -> tuple[int, int]:
    """The fingerprint's two slots: one in each half of a per-key block."""
    digest = hashlib.sha256(fingerprint.encode()).digest()
    first, second = (int.from_bytes(digest[i : i + 4], "big") % KEY_SLOTS for i in (0, 4))
    return first, KEY_SLOTS + second


class SharedCounts:
    """The table: anonymous shared memory, inherited by the workers through fork."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._map = mmap.mmap(-1, 4 * workers * ROW)
        self._cells = memoryview(self._map).cast("i")

    def tally(self, index: int) -> Tally:
        return Tally(self._cells, self.workers, index)


def supervise(workers: int, run: Callable[[int], int]) -> int:
    """Run ``run(index)`` in ``workers`` forked processes until a stop signal, which each
    of them gets in turn (one still there STOP_DEADLINE_SECONDS later is killed); a
    worker that dies otherwise is started again. A worker dies with this process, however
    it ends (a SIGKILL too): none is left serving the port with nobody to stop it."""
    children: dict[int, int] = {}
    stopped_by: int | None = None
    parent = os.getpid()

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopped_by
        if stopped_by is None:
            signal.setitimer(signal.ITIMER_REAL, STOP_DEADLINE_SECONDS)
        stopped_by = signum
        for pid in children:
            os.kill(pid, signum)

    def overdue(_signum: int, _frame: object) -> None:
        for pid, index in children.items():
            log.warning("worker %d (pid %d) did not stop: killing it", index, pid)
            os.kill(pid, signal.SIGKILL)

    def start(index: int) -> None:
        """Fork worker ``index``; the stop signals are blocked (by the caller) around it,
        so a stop finds its pid in ``children``."""
        pid = os.fork()
        if pid == 0:
            for signum in (*STOP_SIGNALS, signal.SIGALRM):
                signal.signal(signum, signal.SIG_DFL)
            _die_with(parent)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
            code = 1
            try:
                code = run(index)
            finally:
                os._exit(code)
        children[pid] = index

    def start_all(indexes: list[int]) -> None:
        """Start them with the stop signals blocked: a stop that came meanwhile (even one
        whose handler ran between two forks) reaches every one of them, the last too."""
        signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        try:
            for index in indexes:
                if stopped_by is None:
                    start(index)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if stopped_by is not None:
            for pid in children:
                os.kill(pid, stopped_by)

    previous = {signum: signal.signal(signum, stop) for signum in STOP_SIGNALS}
    previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, overdue)
    try:
        start_all(list(range(workers)))
        while children:
            pid, status = os.wait()
            index = children.pop(pid)
            if stopped_by is None:
                log.warning("worker %d (pid %d) died (status %#x): restarting", index, pid, status)
                time.sleep(RESPAWN_SECONDS)
                start_all([index])
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def _die_with(parent: int) -> None:
    """Have the kernel TERM this worker when ``parent`` ends (PR_SET_PDEATHSIG), and
    end now if it already has."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)
