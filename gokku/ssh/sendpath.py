"""asyncssh's send and receive paths, made cheaper per byte for bulk transfers.

Profiling four concurrent downloads (py-spy and perf, bench/throughput.py) showed the
server's CPU going mostly to two things asyncssh 2.x does for every SSH packet (at most
32 KiB with OpenSSH clients):

- It sends an empty SSH_MSG_IGNORE before each packet. That is the old countermeasure for
  CBC ciphers, whose next IV is the last ciphertext block an attacker has already seen;
  AEAD ciphers (AES-GCM, ChaCha20-Poly1305) take a fresh nonce per packet and gain
  nothing from it. Every IGNORE still costs an encryption, a send() and, on the client, a
  decryption. The server only offers AEAD ciphers by default, so the IGNOREs are dropped
  for those and kept for anything else.
- It hands each packet to the transport on its own, which (with an empty buffer) is one
  send() system call per packet. A channel's flush encrypts up to a window's worth of
  packets in one go; they are now written with one call.


Profiling a single-stream upload the same way showed the receiving side copying each byte
many times over. asyncssh keeps what the socket delivered (up to 256 KiB a read) in one
bytes object and, for every packet (32 KiB from OpenSSH), slices the rest of it off into
a new one twice, after the header and after the body: eight packets in a read copy about
eight times the read. The socket's bytes now wait in a queue of their own and asyncssh's
buffer is given just what the step it is at needs (a header, then that packet's body), so
its slices copy one packet at a time, and only once.

Under AES-GCM the channel data packets, nearly all of a transfer, go a shorter way still
(``gokku.ssh.channeldata``): the channel's flush seals them itself, and a packet whose
length field (not encrypted under GCM) shows it whole is fed to the header step at once
and opened there; any other packet goes on through asyncssh's steps.

All are patches on asyncssh's classes, so ``install`` is called by the serving process
only, never on import; tests/test_ssh_sendpath.py checks them against the installed
asyncssh (no IGNOREs under AES-GCM, IGNOREs kept under AES-CTR, every byte intact both
ways, also when a read ends inside a packet or its header).
"""

import collections
import inspect
import logging
from collections.abc import Callable
from typing import Any

from gokku.ssh import channeldata

log = logging.getLogger("gokku.serve")

AEAD_ENCRYPTIONS = ("GCMEncryption", "ChachaEncryption")
# The asyncssh minor version these patches were read against (pyproject pins it).
CHECKED_VERSION = "2.24"
# The private methods replaced, with the parameters the replacements pass on.
PATCHED_METHODS = (
    ("connection", "SSHConnection", "send_packet", ("self", "pkttype", "*args", "handler=")),
    ("connection", "SSHConnection", "_send", ("self", "data")),
    ("channel", "SSHChannel", "_flush_send_buf", ("self",)),
    ("connection", "SSHConnection", "data_received", ("self", "data", "datatype=")),
    ("connection", "SSHConnection", "_recv_pkthdr", ("self",)),
    ("connection", "SSHConnection", "_recv_packet", ("self",)),
    ("channel", "SSHChannel", "_accept_data", ("self", "data", "datatype=")),
)
# Attributes the replacements (and ``channeldata``) read on instances: set by the class's
# __init__.
INSTANCE_ATTRIBUTES = (
    *(
        ("connection", "SSHConnection", name)
        for name in (
            "_recv_handler",
            "_recv_blocksize",
            "_recv_macsize",
            "_pktlen",
            *channeldata.CONNECTION_ATTRIBUTES,
        )
    ),
    ("channel", "SSHChannel", "_conn"),
    *(("channel", "SSHChannel", name) for name in channeldata.CHANNEL_ATTRIBUTES),
    ("encryption", "GCMEncryption", "_cipher"),
    ("stream", "SSHWriter", "_datatype"),
    *(("cipher", "GCMCipher", name) for name in channeldata.CIPHER_ATTRIBUTES),
)


def _parameters(function: Callable[..., Any]) -> tuple[str, ...]:
    """``("self", "*args", "handler=")``: names and kinds, what a call depends on."""
    kinds = {inspect.Parameter.VAR_POSITIONAL: "*", inspect.Parameter.VAR_KEYWORD: "**"}
    return tuple(
        kinds.get(p.kind, "") + p.name + ("=" if p.default is not p.empty else "")
        for p in inspect.signature(function).parameters.values()
    )


def problems() -> list[str]:
    """What the patches need from asyncssh that is missing or shaped otherwise (an
    asyncssh other than the one they were checked against); none means safe to patch."""
    import asyncssh
    from asyncssh import channel, connection, constants, encryption, packet, stream
    from asyncssh.crypto import cipher

    modules = {
        "channel": channel,
        "connection": connection,
        "cipher": cipher,
        "encryption": encryption,
        "stream": stream,
    }
    found = [
        f"{module.__name__}.{name} is missing"
        for module, names in ((encryption, AEAD_ENCRYPTIONS), (constants, ("MSG_IGNORE",)))
        for name in names
        if not hasattr(module, name)
    ]
    if not callable(getattr(packet, "String", None)):
        found.append("asyncssh.packet.String is missing")
    for module, class_name, method, expected in PATCHED_METHODS:
        cls = getattr(modules[module], class_name, None)
        function = getattr(cls, method, None)
        if not callable(function):
            found.append(f"{class_name}.{method} is missing")
        elif _parameters(function) != expected:
            found.append(f"{class_name}.{method}{inspect.signature(function)} changed")
    for module, class_name, attribute in INSTANCE_ATTRIBUTES:
        init = getattr(getattr(modules[module], class_name, None), "__init__", None)
        if attribute not in getattr(getattr(init, "__code__", None), "co_names", ()):
            found.append(f"{class_name} instances no longer get {attribute}")
    if not callable(getattr(getattr(cipher, "GCMCipher", None), "_update_iv", None)):
        found.append("GCMCipher._update_iv is missing")
    if found:
        found.insert(0, f"asyncssh {asyncssh.__version__} (checked: {CHECKED_VERSION}.x)")
    return found


def install() -> bool:
    """Patch asyncssh in this process (idempotent); True when patched.

    An asyncssh that lacks what the patches replace or read is left alone, with a log
    line: the server then runs on plain asyncssh, slower per byte but correct."""
    from asyncssh import channel, connection, constants, encryption, packet

    conn_class = connection.SSHConnection
    if getattr(conn_class, "_gokku_send_path", False):
        return True
    missing = problems()
    if missing:
        log.warning("send path not patched, plain asyncssh runs: %s", "; ".join(missing))
        return False
    ignore = constants.MSG_IGNORE
    aead = tuple(getattr(encryption, name) for name in AEAD_ENCRYPTIONS)
    gcm = encryption.GCMEncryption
    empty = packet.String(b"")
    send_packet: Callable[..., None] = conn_class.send_packet
    send: Callable[[Any, bytes], None] = conn_class._send
    flush: Callable[[Any], None] = channel.SSHChannel._flush_send_buf

    def lean_send_packet(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == ignore and args == (empty,) and isinstance(self._send_encryption, aead):
            return
        send_packet(self, pkttype, *args, handler=handler)

    def gathering_send(self: Any, data: bytes) -> None:
        gathered = self.__dict__.get("_gokku_gathered")
        if gathered is None:
            send(self, data)
        else:
            gathered.append(data)

    def gathered_flush(self: Any) -> None:
        conn = self._conn
        if conn is None:
            flush(self)
            return
        outer = conn.__dict__.get("_gokku_gathered")
        gathered: list[bytes] = [] if outer is None else outer
        conn._gokku_gathered = gathered
        try:
            channeldata.seal_queued(self, conn, gathered)
            flush(self)
        finally:
            if outer is None:
                conn._gokku_gathered = None
                if gathered:
                    send(conn, gathered[0] if len(gathered) == 1 else b"".join(gathered))

    conn_class.send_packet = lean_send_packet
    conn_class._send = gathering_send
    channel.SSHChannel._flush_send_buf = gathered_flush
    _meter_receive(conn_class, gcm)
    channeldata.enable(gcm)
    conn_class._gokku_send_path = True
    return True


def _meter_receive(conn_class: Any, gcm: type) -> None:
    """Feed asyncssh's receive buffer (``_inpbuf``) one step at a time: a packet's header,
    then its body, from a queue of what the socket delivered.

    The invariant asyncssh's loop (``while self._inpbuf and self._recv_handler()``)
    needs: whenever bytes are queued, ``_inpbuf`` is not empty. Outside the two steps
    (the version line, a packet handled asynchronously) everything queued is handed over,
    as asyncssh would have it; and if a step still finds too little, it gets everything
    before it is asked again, so a wrong size costs copies, never a stall."""
    header: Callable[[Any], bool] = conn_class._recv_pkthdr
    body: Callable[[Any], bool] = conn_class._recv_packet

    def wanted(self: Any) -> int | None:
        """Bytes the current step needs in ``_inpbuf``; None: all there are."""
        step = getattr(self._recv_handler, "__func__", None)
        if step is metered_header:
            return whole_packet(self) or self._recv_blocksize
        if step is metered_body:
            return 4 + self._pktlen + self._recv_macsize - self._recv_blocksize
        return None

    def whole_packet(self: Any) -> int | None:
        """The next packet's size with its tag, for AES-GCM (whose length field is not
        encrypted) when its length is at hand: all of it is fed at once, so that
        ``channeldata`` can open it in one step."""
        if type(self._recv_encryption) is not gcm:
            return None
        head = self._inpbuf
        if not head and (queue := self.__dict__.get("_gokku_queue")):
            head = queue[0][self._gokku_start : self._gokku_start + 4]
        return channeldata.packet_size(self, head)

    def feed(self: Any, everything: bool = False) -> None:
        queue: collections.deque[bytes] | None = self.__dict__.get("_gokku_queue")
        if not queue:
            return
        want = None if everything else wanted(self)
        short = float("inf") if want is None else want - len(self._inpbuf)
        parts = []
        while queue and short > 0:
            chunk, start = queue[0], self._gokku_start
            take = int(min(short, len(chunk) - start))
            if start + take == len(chunk):
                queue.popleft()
                self._gokku_start = 0
                parts.append(chunk[start:] if start else chunk)
            else:
                self._gokku_start = start + take
                parts.append(chunk[start : start + take])
            short -= take
        if parts:
            self._inpbuf += parts[0] if len(parts) == 1 else b"".join(parts)

    def metered_data_received(self: Any, data: bytes, datatype: Any = None) -> None:
        queue = self.__dict__.get("_gokku_queue")
        if queue is None:
            queue = self._gokku_queue = collections.deque()
            self._gokku_start = 0
        queue.append(data)
        feed(self)
        self._recv_data()

    def step(self: Any, original: Callable[[Any], bool]) -> bool:
        handler = self._recv_handler
        done = original(self)
        if not done and self._recv_handler == handler and self.__dict__.get("_gokku_queue"):
            feed(self, everything=True)
            done = original(self)
        feed(self)
        return done

    def metered_header(self: Any) -> bool:
        # Each feed adds at least a byte while the packet is short of what ``wanted``
        # says (``open_packet`` and ``wanted`` share ``packet_size``), so this ends.
        while (taken := channeldata.open_packet(self)) is None and self.__dict__.get(
            "_gokku_queue"
        ):
            feed(self)
        if taken:
            feed(self)
            return True
        return False if taken is None else step(self, header)

    def metered_body(self: Any) -> bool:
        return step(self, body)

    conn_class.data_received = metered_data_received
    conn_class._recv_pkthdr = metered_header
    conn_class._recv_packet = metered_body
