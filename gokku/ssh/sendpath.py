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

from collections.abc import Callable
from typing import Any

AEAD_ENCRYPTIONS = ("GCMEncryption", "ChachaEncryption")


def install() -> None:
    """Patch asyncssh in this process (idempotent)."""
    from asyncssh import channel, connection, encryption
    from asyncssh.constants import MSG_IGNORE
    from asyncssh.packet import String

    conn_class = connection.SSHConnection
    if getattr(conn_class, "_gokku_send_path", False):
        return
    aead = tuple(getattr(encryption, name) for name in AEAD_ENCRYPTIONS)
    empty = String(b"")
    send_packet: Callable[..., None] = conn_class.send_packet
    send: Callable[[Any, bytes], None] = conn_class._send
    flush: Callable[[Any], None] = channel.SSHChannel._flush_send_buf

    def lean_send_packet(self: Any, pkttype: int, *args: bytes, handler: Any = None) -> None:
        if pkttype == MSG_IGNORE and args == (empty,) and isinstance(self._send_encryption, aead):
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
