"""The embedded SSH server (``gokku serve``): listener, host key, authentication, limits.

Keys are checked against the registry (``gokku.keys``) at every attempt, so added and
removed keys take effect without a restart; asyncssh's own authorized_keys handling is
not used because a ``command=`` option there replaces the client's command. What asyncssh
does not enforce is done here: a cap on refused keys per connection (MaxAuthTries), on
connections in total, per address and per key (with slots only admin keys may take), and
on sessions per connection and per key. A key removed from the registry has its
connections closed (``watch_registry``). Several server
processes share the listening socket (``gokku.ssh.workers``); every session runs
``gokku ssh-command`` in a process of its own (``gokku.ssh.session``), forked by the
worker's zygote (``gokku.ssh.spawn``).
"""

import asyncio
import contextlib
import gc
import logging
import os
import random
import signal
import socket
import sys
import time

from gokku import keys
from gokku.access import ADMIN
from gokku.context import Context
from gokku.errors import GokkuError
from gokku.paths import Root
from gokku.ssh import fdlimit, rawcommand, sendpath
from gokku.ssh.config import SSHConfig
from gokku.ssh.session import Session
from gokku.ssh.spawn import Spawner
from gokku.ssh.sshlib import asyncssh
from gokku.ssh.workers import (
    KEY_CONNECTIONS,
    KEY_SESSIONS,
    STOP_SIGNALS,
    SharedCounts,
    Tally,
    supervise,
)
from gokku.storage import write_atomic

log = logging.getLogger("gokku.serve")

HOST_KEY = "host_ed25519_key"
SHUTDOWN_SECONDS = 10  # workers get HUP, TERM, then KILL 2 s apart (the runner)
WINDOW = 8 << 20  # a large window keeps uploads near line speed (notes/asyncssh.md)
ACCEPT_PAUSE = 0.5  # seconds without accepting after accept() failed (out of fds)
BALANCE_WAIT = 0.1  # seconds a busier worker leaves a new connection to the others
DRAIN_BATCH = 64  # connections a worker takes at once after stepping aside
BACKLOG = 1024  # 500 clients connecting at once must not overflow the accept queue
STALE_SECONDS = 1.0  # longer than a login takes on a loaded server: an idle connection
REGISTRY_POLL_SECONDS = 0.25  # how soon a removed key's connections are closed


def host_key(root: Root) -> asyncssh.SSHKey:
    """The server's ed25519 key: created once (mode 0600), then reused."""
    path = root.ssh / HOST_KEY
    if path.is_file():
        return asyncssh.read_private_key(str(path))
    root.ssh.mkdir(parents=True, exist_ok=True)
    root.ssh.chmod(0o700)
    key = asyncssh.generate_private_key("ssh-ed25519")
    write_atomic(path, key.export_private_key(), mode=0o600)
    write_atomic(path.with_name(HOST_KEY + ".pub"), key.export_public_key(), mode=0o644)
    return key


class Limits:
    """Who may connect: unauthenticated connections (this worker's, with their own small
    caps) apart from logged-in ones (counted server-wide), so that a flood of connections
    that never log in cannot take the slots of registered keys.

    Before login, as OpenSSH's MaxStartups ``start:rate:full``: past ``start`` fresh
    connections a new one is refused with a probability rising from ``rate`` % to 100 %
    at ``full``; at ``full`` the oldest connection that has been waiting longer than a
    real login takes (STALE_SECONDS) is dropped to make room, so idle connections held
    open cannot lock keys out. One address may hold ``max_startups_per_address``.

    Logged in, a member key holds at most ``max_connections_per_key`` connections and
    ``max_sessions_per_key`` sessions, and member keys together leave
    ``admin_connections`` of ``max_connections`` to admin keys: a member holding all it
    may, or several members from one address, never lock an admin out. Admin keys (the
    server's operators, whose scripts may hold many connections) are held to
    ``max_connections`` only.
    """

    def __init__(self, config: SSHConfig, tally: Tally) -> None:
        self.config = config
        self.tally = tally
        self.startups = config.startups()
        self.pending: dict[Connection, float] = {}
        self.connections: set[Connection] = set()
        self.running: set[Session] = set()

    def arrived(self, connection: "Connection") -> str | None:
        """Count a new, unauthenticated connection in; return why it is refused instead."""
        now = time.monotonic()
        same = sum(1 for c in self.pending if c.address == connection.address)
        if same >= self.config.max_startups_per_address:
            return "too many unauthenticated connections from your address"
        start, rate, full = self.startups
        if len(self.pending) >= full:
            oldest = min(self.pending, key=self.pending.__getitem__)
            if now - self.pending[oldest] < STALE_SECONDS:
                return "too many unauthenticated connections"
            log.warning("dropping an unauthenticated connection from %s", oldest.address)
            self.pending.pop(oldest)
            oldest.close()
        fresh = sum(1 for t in self.pending.values() if now - t < STALE_SECONDS)
        if fresh >= start:
            chance = rate + (1 - rate) * (fresh - start) / max(1, full - start)
            if random.random() < chance:
                return "too many unauthenticated connections; try again"
        self.pending[connection] = now
        return None

    def logged_in(self, connection: "Connection") -> str | None:
        """Move a connection that authenticated to the server-wide counts, within the caps."""
        self.pending.pop(connection, None)
        key = connection.key
        assert key is not None
        refused = self._over_a_cap(key, connection.address)
        if refused:
            return refused
        self.connections.add(connection)
        self.tally.add(connection.address, 1)
        self.tally.add_key(KEY_CONNECTIONS, key.fingerprint, 1)
        return None

    def _over_a_cap(self, key: keys.Key, address: str) -> str | None:
        config, admin = self.config, key.role == ADMIN
        room = config.max_connections if admin else config.member_connections()
        if self.tally.total() >= room:
            return "too many connections to this server"
        if admin:
            return None
        if self.tally.from_address(address) >= config.max_connections_per_address:
            return "too many connections from your address"
        if self.tally.by_key(KEY_CONNECTIONS, key.fingerprint) >= config.max_connections_per_key:
            return f"too many connections with key {key.name}"
        return None

    def release(self, connection: "Connection") -> None:
        if self.pending.pop(connection, None) is None and connection in self.connections:
            assert connection.key is not None
            self.connections.discard(connection)
            self.tally.add(connection.address, -1)
            self.tally.add_key(KEY_CONNECTIONS, connection.key.fingerprint, -1)

    def session_opened(self, session: Session, key: keys.Key) -> str | None:
        """Count a session of ``key`` in; return why it is refused instead."""
        cap = self.config.max_sessions_per_key
        if key.role != ADMIN and self.tally.by_key(KEY_SESSIONS, key.fingerprint) >= cap:
            return f"too many sessions with key {key.name}"
        self.running.add(session)
        self.tally.add_key(KEY_SESSIONS, key.fingerprint, 1)
        return None

    def session_closed(self, session: Session, key: keys.Key) -> None:
        self.running.discard(session)
        self.tally.add_key(KEY_SESSIONS, key.fingerprint, -1)

    def close_unregistered(self, registered: set[str]) -> None:
        """Close every connection whose key is not in ``registered`` (fingerprints),
        logged in or between its key's check and the end of its login."""
        for connection in [*self.pending, *self.connections]:
            if connection.key is not None and connection.key.fingerprint not in registered:
                log.info("key %s was removed: closing its connection", connection.key.name)
                connection.close()


class Connection(asyncssh.SSHServer):
    """One client connection: who it is, how often it failed, how many sessions it has."""

    def __init__(self, root: Root, config: SSHConfig, limits: Limits, spawner: Spawner) -> None:
        self.root = root
        self.config = config
        self.limits = limits
        self.spawner = spawner
        self.address = ""
        self.key: keys.Key | None = None
        self.sessions = 0
        self._conn: asyncssh.SSHServerConnection | None = None
        self._failures = 0

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self._conn = conn
        peer = conn.get_extra_info("peername") or ("", 0)
        self.address = str(peer[0])
        _ack_at_once(conn)
        self._refuse_if(self.limits.arrived(self))

    def _refuse_if(self, refused: str | None) -> None:
        if refused and self._conn is not None:
            log.warning("refused connection from %s: %s", self.address, refused)
            self._conn.disconnect(asyncssh.DISC_TOO_MANY_CONNECTIONS, refused)

    def connection_lost(self, exc: Exception | None) -> None:
        self.limits.release(self)

    def begin_auth(self, username: str) -> bool:
        return True  # False would mean "no authentication needed"

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fingerprint = key.get_fingerprint("sha256")
        found = keys.by_fingerprint(self.root, fingerprint)
        if found and username == self.config.user:
            self.key = found
            return True
        self._failures += 1
        log.info("refused key %s for user %r from %s", fingerprint, username, self.address)
        if self._failures >= self.config.max_auth_tries and self._conn is not None:
            log.warning("too many failed keys from %s", self.address)
            self._conn.disconnect(
                asyncssh.DISC_NO_MORE_AUTH_METHODS_AVAILABLE, "too many authentication failures"
            )
        return False

    def auth_completed(self) -> None:
        assert self.key is not None
        log.info("key %s (%s) logged in from %s", self.key.name, self.key.fingerprint, self.address)
        if self._conn is not None:
            vars(self._conn).pop("data_received", None)  # _ack_at_once's part is done
        self._refuse_if(self.limits.logged_in(self))

    def session_requested(self) -> Session | bool:
        key = self.key
        if key is None or self.sessions >= self.config.max_sessions:
            return False
        if keys.by_fingerprint(self.root, key.fingerprint) is None:
            log.info("key %s was removed: no new session on its connection", key.name)
            return False
        session = Session(self.root, key, self.address, self.spawner)
        refused = self.limits.session_opened(session, key)
        if refused:
            log.warning("refused a session of %s from %s: %s", key.name, self.address, refused)
            raise asyncssh.ChannelOpenError(asyncssh.OPEN_RESOURCE_SHORTAGE, refused)
        self.sessions += 1
        session.add_done_callback(lambda: self._session_done(session, key))
        return session

    def _session_done(self, session: Session, key: keys.Key) -> None:
        """Counted from the request until just before the exit status is sent (or the
        channel closed before any command started), so a client reusing the slot never
        races it."""
        self.sessions -= 1
        self.limits.session_closed(session, key)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


def serve(ctx: Context, config: SSHConfig) -> int:
    """Bind, then serve in ``config.workers`` processes (this one if 1) until SIGTERM."""
    logging.basicConfig(format="%(asctime)s gokku-serve %(message)s", level=logging.INFO)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)
    config.startups()  # a bad max_startups is refused before anything listens
    config.member_connections()  # and so is a reserve larger than the whole
    session_nofile = fdlimit.raise_to_hard()
    key = host_key(ctx.root)
    offer = ciphers(config)
    count = config.workers or os.cpu_count() or 1
    # A stop that comes once the port is open waits for the handlers (the supervisor's,
    # once the workers are forked, or the single worker's, before its zygote starts): a
    # service manager's stop right after the start would otherwise end this process by
    # the signal's default, with an error status and no worker told.
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    sock = _listen(config)
    host, port = sock.getsockname()[:2]
    ctx.out(f"Host key {key.get_fingerprint('sha256')} ({ctx.root.ssh / HOST_KEY})")
    ctx.out(f"Listening on {host}:{port}, login user {config.user!r}, {count} worker(s)")
    counts = SharedCounts(count)

    def run(index: int) -> int:
        tally = counts.tally(index)
        tally.reset()
        return asyncio.run(_serve(ctx.root, config, key, offer, sock, tally, session_nofile))

    return run(0) if count == 1 else supervise(count, run)


def _listen(config: SSHConfig) -> socket.socket:
    """The listening socket, bound before any worker exists so that all of them share it."""
    try:
        infos = socket.getaddrinfo(
            config.host or None, config.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
        family, kind, proto, _, address = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise GokkuError(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def ciphers(config: SSHConfig) -> list[str]:
    """The configured cipher offer, refused with a clear error if asyncssh lacks one."""
    from asyncssh.encryption import get_encryption_algs

    wanted = [name.strip() for name in config.ciphers.split(",") if name.strip()]
    known = {alg.decode() for alg in get_encryption_algs()}
    unknown = [name for name in wanted if name not in known]
    if unknown or not wanted:
        raise GokkuError(
            f"ssh.ciphers: unknown cipher(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(sorted(known))}"
        )
    return wanted


def _reap_with_pidfds() -> None:
    """Python 3.11 waits for each worker in a thread of its own (3.12 uses pidfds):
    500 sessions would be 500 threads."""
    if sys.version_info < (3, 12):
        watcher = asyncio.PidfdChildWatcher()
        watcher.attach_loop(asyncio.get_running_loop())
        asyncio.set_child_watcher(watcher)


async def _serve(
    root: Root,
    config: SSHConfig,
    key: asyncssh.SSHKey,
    offer: list[str],
    sock: socket.socket,
    tally: Tally,
    session_nofile: int,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in STOP_SIGNALS:
        # Handlers (not SIG_IGN) so that every process started here starts with default
        # dispositions; the mask too is cleared before any is started.
        loop.add_signal_handler(signum, stop.set)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)  # a stop held since listen()
    _reap_with_pidfds()
    sendpath.install()
    rawcommand.install()
    limits = Limits(config, tally)
    spawner = Spawner(root, session_nofile)
    await spawner.start()
    options = await asyncssh.SSHServerConnectionOptions.construct(
        server_factory=lambda: Connection(root, config, limits, spawner),
        server_host_keys=[key],
        server_version="Gokku",
        encoding=None,
        line_editor=False,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_scp=False,
        login_timeout=config.login_timeout,
        keepalive_interval=config.keepalive_interval,
        keepalive_count_max=config.keepalive_count_max,
        window=WINDOW,
        encryption_algs=offer,
        rekey_bytes=config.rekey_limit,
    )
    # Everything so far (asyncssh, cryptography, the dispatch path: some 38,000 objects)
    # lives as long as the worker. Frozen, the collector no longer walks it: a full
    # collection took 65 ms on a busy 2-core host, and the first young ones up to 9 ms,
    # out of whichever login they fell on (the latency tail).
    gc.freeze()
    acceptor = Acceptor(sock, options, tally)
    acceptor.start()
    watching = asyncio.ensure_future(watch_registry(root, limits))
    await stop.wait()
    log.info("shutting down: hanging up %d session(s)", len(limits.running))
    acceptor.stop()
    watching.cancel()
    for connection in list(limits.connections):
        connection.close()
    deadline = loop.time() + SHUTDOWN_SECONDS
    while limits.running and loop.time() < deadline:
        await asyncio.sleep(0.05)
    await spawner.close()
    return 0


async def watch_registry(root: Root, limits: Limits) -> None:
    """Close the connections of keys removed from the registry, whichever process removed
    them (``ssh-keys:remove`` on the server or over SSH): the file is looked at every
    REGISTRY_POLL_SECONDS and read again when it was replaced (every write is a rename)."""
    path = keys.registry_path(root)
    seen = _stamp(path)
    while True:
        await asyncio.sleep(REGISTRY_POLL_SECONDS)
        stamp = _stamp(path)
        if stamp == seen:
            continue
        seen = stamp
        try:
            registered = {key.fingerprint for key in keys.load(root)}
        except Exception as exc:  # a registry being repaired: keep everyone, look again later
            log.warning("cannot read the key registry (%s): connections left open", exc)
            continue
        limits.close_unregistered(registered)


def _stamp(path: os.PathLike) -> tuple[int, int, int] | None:
    """What changes whenever the file is replaced or written: inode, mtime, size."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return None
    return info.st_ino, info.st_mtime_ns, info.st_size


def _ack_at_once(conn: asyncssh.SSHServerConnection) -> None:
    """Until authentication is done, acknowledge each read at once.

    OpenSSH's client without a terminal leaves Nagle on: the second of two small packets
    in a row (ECDH_INIT after KEXINIT, SERVICE_REQUEST after NEWKEYS) waits for the ACK of
    the first, and Linux delays that ACK up to 40 ms when it has nothing to send back.
    Most logins waited 40 ms for it, one in seven 80 (README, Benchmarks).
    """
    sock = conn.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    received = conn.data_received

    def data_received(data: bytes, datatype: int | None = None) -> None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        received(data, datatype)

    conn.data_received = data_received  # type: ignore[method-assign]


class Acceptor:
    """Takes this worker's share of the connections off the shared listening socket.

    asyncio's own accept loop takes every queued connection at once, so a burst (or four
    streams started together) would all land on whichever worker woke first. This one
    takes one connection per wake-up, and only while no other worker is less loaded; a
    busier worker steps aside for BALANCE_WAIT and then takes what nobody took meanwhile,
    up to DRAIN_BATCH at once: under a flood both workers step aside in turn, and taking
    one connection per pause would make the queue (and a key waiting in it) crawl.
    """

    def __init__(
        self, sock: socket.socket, options: asyncssh.SSHServerConnectionOptions, tally: Tally
    ) -> None:
        self._sock = sock
        self._options = options
        self._tally = tally
        self._loop = asyncio.get_running_loop()
        self._handshakes: set[asyncio.Task] = set()
        self._stopped = False

    def start(self) -> None:
        if not self._stopped:
            self._loop.add_reader(self._sock, self._readable)

    def stop(self) -> None:
        self._stopped = True
        self._loop.remove_reader(self._sock)

    def _readable(self) -> None:
        if self._tally.least_loaded():
            self._take()
        else:
            self._pause(BALANCE_WAIT, take=True)

    def _pause(self, seconds: float, take: bool) -> None:
        self._loop.remove_reader(self._sock)
        self._loop.call_later(seconds, self._resume, take)

    def _resume(self, take: bool) -> None:
        if self._stopped:
            return
        self.start()
        if take:
            for _ in range(DRAIN_BATCH):
                if not self._take():
                    break

    def _take(self) -> bool:
        """Accept one connection; False when there was none to take (or none could be)."""
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return False  # another worker took it
        except OSError as exc:  # EMFILE and friends: wait a little rather than spin
            log.warning("cannot accept a connection: %s", exc)
            self._pause(ACCEPT_PAUSE, take=False)
            return False
        conn.setblocking(False)
        self._tally.handshaking(1)
        task = asyncio.ensure_future(self._handshake(conn))
        self._handshakes.add(task)
        task.add_done_callback(self._handshakes.discard)
        return True

    async def _handshake(self, conn: socket.socket) -> None:
        """Key exchange and authentication; a failure concerns only this client."""
        try:
            with contextlib.suppress(OSError, asyncssh.Error, asyncio.TimeoutError):
                await asyncssh.run_server(conn, options=self._options)
        finally:
            self._tally.handshaking(-1)
