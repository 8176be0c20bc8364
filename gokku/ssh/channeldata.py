"""Channel data under AES-GCM, sealed and opened in one step each.

A bulk transfer is nearly all SSH_MSG_CHANNEL_DATA packets of 32 KiB (OpenSSH's packet
size), and asyncssh 2.x builds and takes apart each one in layers: the payload, the
padded packet, the header, the ciphertext and the tag are each a new bytes object, so a
32 KiB packet is copied about ten times on its way out and seven on its way in, and its
AES-GCM key is expanded anew for every packet (a new ``AESGCM`` each time, 2.6 µs on the
machine measured, as much as the decryption itself). On the Intel VM of the README that
made the server's CPU per GB 1.13-1.25x sshd's.

Here a data packet going out is one join of the plaintext (padding length, header, data,
padding) and one encryption, into the buffer that goes to the socket; what a session's
pump reads from its command is sealed from there as far as the window goes, and only the
rest is queued (and copied) by asyncssh. A packet coming in is decrypted straight from
the receive buffer, and its data is the only slice taken. The key schedule is made once
per key.
Everything else (other packet types, other ciphers, compression, a key exchange due or
in progress, anything asyncssh would refuse) is left to asyncssh's own path, so what
the client sees is what asyncssh would have sent, byte for byte apart from the random
padding, and every error is asyncssh's own.

The sequence numbers, the nonce and the rekey byte count move exactly as asyncssh moves
them. Nothing here acts until ``gokku.ssh.sendpath`` has checked that everything read
here is there and ``enable``d it; it calls ``seal_queued`` and ``open_packet`` from its
patches, the session's pump calls ``write``.
"""

import os
import time
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MSG_CHANNEL_DATA = 94
MSG_CHANNEL_EXTENDED_DATA = 95
TAG_SIZE = 16
# Attributes read on instances, by class (set in each class's __init__).
CONNECTION_ATTRIBUTES = (
    "_recv_encryption",
    "_send_encryption",
    "_compressor",
    "_decompressor",
    "_auth_complete",
    "_kex_complete",
    "_transport",
    "_inpbuf",
    "_max_recv_pktlen",
    "_recv_seq",
    "_send_seq",
    "_auth_final",
    "_channels",
    "_send_blocksize",
    "_send_enchdrlen",
    "_rekey_bytes",
    "_rekey_bytes_sent",
    "_rekey_seconds",
    "_rekey_time",
)
CHANNEL_ATTRIBUTES = (
    "_send_state",
    "_recv_state",
    "_recv_window",
    "_send_chan",
    "_send_buf",
    "_send_buf_len",
    "_send_window",
    "_send_pktsize",
)
CIPHER_ATTRIBUTES = ("_key", "_iv")
# asyncssh's AES-GCM packet encryption, once ``gokku.ssh.sendpath`` has checked the
# asyncssh it runs on and patched it; until then (or if it found it changed) nothing
# here takes a packet.
_gcm: type | None = None


def enable(gcm: type) -> None:
    """Let packets encrypted by ``gcm`` (asyncssh's GCMEncryption) take the path here."""
    global _gcm
    _gcm = gcm


def _sealer(encryption: Any) -> tuple[Any, AESGCM] | None:
    """The GCM cipher behind ``encryption`` and its key schedule, made once per key;
    None for any other kind of encryption."""
    if _gcm is None or type(encryption) is not _gcm:
        return None
    cipher = encryption._cipher
    aead = cipher.__dict__.get("_gokku_aead")
    if aead is None:
        aead = cipher._gokku_aead = AESGCM(cipher._key)
    return cipher, aead


def packet_size(conn: Any, head: bytes) -> int | None:
    """The size of the GCM packet that starts with ``head``, its tag included (the length
    field is not encrypted under GCM); None when ``head`` is too short to tell, or the
    length is over what ``conn`` takes (asyncssh's own step refuses it)."""
    if len(head) < 4:
        return None
    pktlen = int.from_bytes(head[:4], "big")
    return 4 + pktlen + TAG_SIZE if pktlen <= conn._max_recv_pktlen else None


def open_packet(conn: Any) -> bool | None:
    """Take the channel data packet at the head of ``conn._inpbuf``: True when taken and
    delivered; None when more bytes are needed first; False when asyncssh's own path must
    take it (not channel data, not this cipher, or anything asyncssh would refuse: it
    then decrypts it again and says what is wrong, as it always did)."""
    sealed = _sealer(conn._recv_encryption)
    if sealed is None or conn._decompressor or not conn._auth_complete or not conn._transport:
        return False
    buf = conn._inpbuf
    if len(buf) < 4:
        return None
    total = packet_size(conn, buf)
    if total is None:
        return False
    if len(buf) < total:
        return None
    cipher, aead = sealed
    view = memoryview(buf)
    try:
        plain = aead.decrypt(cipher._iv, view[4:total], view[:4])
    except InvalidTag:
        return False
    if len(plain) < 10 or plain[1] != MSG_CHANNEL_DATA:
        return False
    padding = plain[0]
    datalen = int.from_bytes(plain[6:10], "big")
    if not padding or 10 + datalen + padding != len(plain):
        return False
    chan = conn._channels.get(int.from_bytes(plain[2:6], "big"))
    if chan is None or chan._recv_state != "open" or datalen > chan._recv_window:
        return False
    cipher._update_iv()
    conn._inpbuf = buf[total:]
    conn._recv_seq = (conn._recv_seq + 1) & 0xFFFFFFFF
    conn._auth_final = True
    chan._accept_data(plain[10 : 10 + datalen])
    return True


def seal_queued(chan: Any, conn: Any, out: list[bytes | bytearray]) -> None:
    """Encrypt as much of ``chan``'s queued output as its window allows onto ``out``, in
    one buffer: packets of at most the channel's packet size, as asyncssh's channel
    flush would cut them. Stops where asyncssh has to act itself (a key exchange due or
    under way): its own flush then sends the rest."""
    queue = chan._send_buf
    sealed, taken, cut, sent = _seal(chan, conn, queue)
    if sealed is None:
        return
    out.append(sealed)
    del queue[:taken]
    if cut:
        del queue[0][0][:cut]
    chan._send_buf_len -= sent


def write(writer: Any, data: bytes) -> None:
    """``writer.write(data)``, less a copy: when nothing of the channel's waits before
    it, what the window allows is sealed and sent from ``data`` itself, and only the rest
    is queued (asyncssh copies what it queues)."""
    chan = writer.channel
    conn = chan.get_connection()
    if data and chan._send_state == "open" and not chan._send_buf and conn is not None:
        sealed, taken, cut, _ = _seal(chan, conn, [(data, writer._datatype)])
        if sealed is not None:
            conn._send(sealed)
        if taken:
            return
        if cut:
            data = memoryview(data)[cut:]
    writer.write(data)


def _seal(
    chan: Any, conn: Any, queue: list[tuple[Any, int | None]]
) -> tuple[bytearray | None, int, int, int]:
    """Seal from the front of ``queue`` (buffers and their data types, as a channel's
    send queue holds them) what ``chan``'s window allows, into one buffer; moves the
    window, the sequence number, the nonce and the rekey count as asyncssh's send would.
    Returns the buffer (None: nothing sealed), the buffers taken whole, the bytes taken
    off the next and the bytes taken in all: cutting the queue is the caller's."""
    sealer = _sealer(conn._send_encryption)
    if (
        sealer is None
        or conn._compressor
        or not (conn._kex_complete and conn._auth_complete)
        or chan._send_chan is None
        or (conn._rekey_seconds and time.monotonic() >= conn._rekey_time)
    ):
        return None, 0, 0, 0
    cipher, aead = sealer
    recipient = chan._send_chan.to_bytes(4, "big")
    blocksize, enchdrlen = conn._send_blocksize, conn._send_enchdrlen
    # First what goes out (so the buffer is made once, at its size), then the sealing.
    packets: list[tuple[memoryview, bytes, int, int]] = []  # data, head, padding, length
    window, room, rekey_sent = chan._send_window, conn._rekey_bytes - conn._rekey_bytes_sent, 0
    taken = 0  # whole buffers taken off the queue
    cut = 0  # bytes taken off the front of the next one
    while taken < len(queue) and window and rekey_sent < room:
        buf, datatype = queue[taken]
        size = min(len(buf) - cut, window, chan._send_pktsize)
        if datatype is None:
            head = bytes((MSG_CHANNEL_DATA,)) + recipient + size.to_bytes(4, "big")
        else:
            head = (
                bytes((MSG_CHANNEL_EXTENDED_DATA,))
                + recipient
                + datatype.to_bytes(4, "big")
                + size.to_bytes(4, "big")
            )
        padding = -(enchdrlen + len(head) + size) % blocksize
        if padding < 4:
            padding += blocksize
        pktlen = 1 + len(head) + size + padding
        packets.append((memoryview(buf)[cut : cut + size], head, padding, pktlen))
        rekey_sent += pktlen
        window -= size
        cut += size
        if cut == len(buf):
            taken, cut = taken + 1, 0
    if not packets:
        return None, 0, 0, 0
    buffer = bytearray(sum(4 + pktlen + TAG_SIZE for *_, pktlen in packets))
    at = 0
    with memoryview(buffer) as view:
        for data, head, padding, pktlen in packets:
            header = pktlen.to_bytes(4, "big")
            view[at : at + 4] = header
            plain = b"".join((bytes((padding,)), head, data, os.urandom(padding)))
            data.release()
            aead.encrypt_into(cipher._iv, plain, header, view[at + 4 : at + 4 + pktlen + TAG_SIZE])
            cipher._update_iv()
            at += 4 + pktlen + TAG_SIZE
    sent = chan._send_window - window
    chan._send_window = window
    conn._send_seq = (conn._send_seq + len(packets)) & 0xFFFFFFFF
    conn._rekey_bytes_sent += rekey_sent
    return buffer, taken, cut, sent
