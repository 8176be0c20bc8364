"""asyncssh's send path, made cheaper per byte for bulk output.

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

Both are patches on asyncssh's classes, so ``install`` is called by the serving process
only, never on import; tests/test_ssh_sendpath.py checks them against the installed
asyncssh (no IGNOREs under AES-GCM, IGNOREs kept under AES-CTR, every byte intact).
"""

import inspect
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("gokku.serve")

AEAD_ENCRYPTIONS = ("GCMEncryption", "ChachaEncryption")
# The asyncssh minor version these patches were read against (pyproject pins it).
CHECKED_VERSION = "2.24"
# The private methods replaced, with the parameters the replacements pass on.
PATCHED_METHODS = (
    ("connection", "SSHConnection", "send_packet", ("self", "pkttype", "*args", "handler=")),
    ("connection", "SSHConnection", "_send", ("self", "data")),
    ("channel", "SSHChannel", "_flush_send_buf", ("self",)),
)
# Attributes the replacements read on instances: set by the class's __init__.
INSTANCE_ATTRIBUTES = (
    ("connection", "SSHConnection", "_send_encryption"),
    ("channel", "SSHChannel", "_conn"),
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
    from asyncssh import channel, connection, constants, encryption, packet

    modules = {"channel": channel, "connection": connection}
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
        if conn is None or conn.__dict__.get("_gokku_gathered") is not None:
            flush(self)
            return
        gathered: list[bytes] = []
        conn._gokku_gathered = gathered
        try:
            flush(self)
        finally:
            conn._gokku_gathered = None
            if gathered:
                send(conn, gathered[0] if len(gathered) == 1 else b"".join(gathered))

    conn_class.send_packet = lean_send_packet
    conn_class._send = gathering_send
    channel.SSHChannel._flush_send_buf = gathered_flush
    conn_class._gokku_send_path = True
    return True
