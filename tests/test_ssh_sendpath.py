"""The embedded server's send path (``gokku.ssh.sendpath``), seen from an asyncssh client
that counts the packets it receives: with an AEAD cipher a download is data packets only
(no empty SSH_MSG_IGNORE before each), with a CBC/CTR-era cipher the countermeasure is
still there, and either way every byte arrives in order."""

import asyncio
import collections
import hashlib
import itertools
import logging
import re
import subprocess
from pathlib import Path

import asyncssh
import pytest
from sshkit import *  # noqa: F403 - fixtures
from sshkit import KeyPair, asyncssh_connect, ssh_argv

SIZE = 4 << 20
PIECES = (1, 7, 32768 + 5, 100_003, 16, 262_147)  # bytes per write of an upload
GCM = "aes128-gcm@openssh.com"
KEX_MESSAGES = {"MSG_KEX_ECDH_REPLY", "MSG_EXT_INFO"}
RECEIVED = re.compile(r"\] Received (MSG_\w+) \(")


class PacketLog(logging.Handler):
    """The names of the packets asyncssh logs as received ('Received MSG_...'), in order."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if found := RECEIVED.search(record.getMessage()):
            self.names.append(found[1])


def _connect(port: int, key: KeyPair, cipher: str, **options: object):
    """An asyncssh client of the test server, held to ``cipher``."""
    return asyncssh_connect(port, key, encryption_algs=[cipher], **options)


def _download(
    port: int, key: KeyPair, command: str, cipher: str, window: int = 2 << 20
) -> tuple[bytes, bytes, list[str]]:
    """The command's stdout and stderr, and the names of the packets the client
    received, in order; ``window``: the client's channel window."""
    logger = logging.getLogger("asyncssh")
    counter = PacketLog()
    level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    asyncssh.set_debug_level(3)

    async def scenario() -> tuple[bytes, bytes]:
        async with _connect(port, key, cipher, window=window) as conn:
            result = await conn.run(command, encoding=None, check=True)
            return result.stdout, result.stderr

    try:
        return *asyncio.run(scenario()), counter.names
    finally:
        asyncssh.set_debug_level(1)
        logger.setLevel(level)
        logger.removeHandler(counter)


@pytest.fixture
def payload(tmp_path: Path) -> Path:
    path = tmp_path / "payload"
    path.write_bytes(bytes(range(256)) * (SIZE // 256))
    return path


@pytest.mark.parametrize("ssh_settings", [{"ciphers": "aes128-gcm@openssh.com"}])
def test_aead_downloads_carry_no_ignore_packets(server, alice, test_plugin, payload) -> None:
    data, _, names = _download(server, alice, f"t:source {payload}", GCM)
    counts = collections.Counter(names)
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload.read_bytes()).digest()
    assert counts["MSG_CHANNEL_DATA"] >= SIZE // 32768
    assert counts["MSG_IGNORE"] == 0, counts


@pytest.mark.parametrize("ssh_settings", [{"ciphers": "aes128-ctr"}])
def test_other_ciphers_keep_the_ignore_countermeasure(server, alice, test_plugin, payload) -> None:
    data, _, names = _download(server, alice, f"t:source {payload}", "aes128-ctr")
    counts = collections.Counter(names)
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload.read_bytes()).digest()
    assert counts["MSG_IGNORE"] >= counts["MSG_CHANNEL_DATA"] >= SIZE // 32768


def _upload(port: int, key: KeyPair, data: bytes, cipher: str) -> str:
    """``data`` written in pieces of uneven sizes (a byte, a packet and a bit, ...), so
    the server's socket reads end anywhere in a packet; the command's sha256 of stdin."""

    async def scenario() -> str:
        async with _connect(port, key, cipher) as conn:
            process = await conn.create_process("t:sink", encoding=None)
            offset = 0
            for index, size in enumerate(itertools.cycle(PIECES)):
                if offset >= len(data):
                    break
                process.stdin.write(data[offset : offset + size])
                offset += size
                if index % 3 == 0:
                    await process.stdin.drain()
            process.stdin.write_eof()
            output = await process.stdout.read()
            await process.wait(check=True)
            return output.decode().strip()

    return asyncio.run(scenario())


@pytest.mark.parametrize(
    ("ssh_settings", "cipher"),
    [
        ({"ciphers": "aes128-gcm@openssh.com"}, "aes128-gcm@openssh.com"),
        ({"ciphers": "aes128-ctr"}, "aes128-ctr"),
    ],
)
def test_uploads_arrive_whole_whatever_the_reads(server, alice, test_plugin, cipher) -> None:
    data = hashlib.sha256(b"seed").digest() * (SIZE // 32)
    assert _upload(server, alice, data, cipher) == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize("ssh_settings", [{"ciphers": GCM}])
def test_downloads_on_stderr_arrive_whole_through_a_narrow_window(
    server, alice, test_plugin, payload
) -> None:
    """A client whose window (100,000 bytes) is a fraction of what the command has
    written, and not a whole number of packets: the server cuts its packets at the
    window's edge and waits for more, and the bytes come out whole and in order. (This
    client reopens its window as it takes the data in, so an overrun would not show here:
    the test below, whose client stops reading, is the one that catches it.)"""
    stdout, stderr, names = _download(server, alice, f"t:errsource {payload}", GCM, window=100_000)
    assert stdout == b""
    assert hashlib.sha256(stderr).digest() == hashlib.sha256(payload.read_bytes()).digest()
    assert names.count("MSG_CHANNEL_EXTENDED_DATA") >= SIZE // 32768


@pytest.mark.parametrize("ssh_settings", [{"ciphers": GCM, "rekey_limit": 1 << 20}])
def test_the_server_renews_its_keys_mid_download(server, alice, test_plugin, payload) -> None:
    """rekey_limit counts every byte the server sends, the bulk data among them: a 4 MiB
    download under a 1 MiB limit renews the keys at least three times, losing nothing;
    and from its KEXINIT to its NEWKEYS the server sends nothing but the key exchange."""
    data, _, names = _download(server, alice, f"t:source {payload}", GCM)
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload.read_bytes()).digest()
    assert names.count("MSG_KEXINIT") >= 1 + 3, names
    inside, during = False, []  # between the server's KEXINIT and its NEWKEYS
    for name in names:
        if name in ("MSG_KEXINIT", "MSG_NEWKEYS"):
            inside = name == "MSG_KEXINIT"
        elif inside:
            during.append(name)
    assert set(during) <= KEX_MESSAGES, during


@pytest.mark.parametrize("ssh_settings", [{"ciphers": GCM}])
def test_client_key_renewals_mid_transfer_lose_nothing(server, alice, test_plugin, payload) -> None:
    """OpenSSH's client renewing its keys every 256 KiB, both ways: while a renewal is
    under way the server holds its data back, and takes the client's under the new keys."""
    argv = [*ssh_argv(server, "gokku", alice.path, "-v", "-o", "RekeyLimit=256K"), "--"]
    data = payload.read_bytes()
    down = subprocess.run([*argv, f"t:source {payload}"], capture_output=True, timeout=120)
    assert down.returncode == 0, down.stderr[-2000:]
    assert hashlib.sha256(down.stdout).digest() == hashlib.sha256(data).digest()
    # It checks its limit only when it sends, and downloading it sends little.
    assert down.stderr.count(b"SSH2_MSG_KEXINIT sent") >= 1 + 2
    up = subprocess.run([*argv, "t:sink"], input=data, capture_output=True, timeout=120)
    assert up.returncode == 0, up.stderr[-2000:]
    assert up.stdout.decode().strip() == hashlib.sha256(data).hexdigest()
    assert up.stderr.count(b"SSH2_MSG_KEXINIT sent") >= 1 + 8


class Held(asyncssh.SSHClientSession):
    """A client session that takes no data until told: its window is never reopened."""

    def __init__(self) -> None:
        self.data: list[bytes] = []

    def connection_made(self, chan: asyncssh.SSHClientChannel) -> None:
        chan.pause_reading()

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        self.data.append(data)


@pytest.mark.parametrize("ssh_settings", [{"ciphers": GCM}])
def test_a_client_that_stops_reading_gets_its_window_and_no_more(
    server, alice, test_plugin, payload
) -> None:
    """The client reads nothing: the server fills the 100,000-byte window and stops.
    A byte more and asyncssh's client drops the connection ('Window exceeded'), so the
    command run after it, on the same connection, would fail."""

    async def scenario() -> bytes:
        async with _connect(server, alice, GCM, window=100_000) as conn:
            chan, held = await conn.create_session(Held, f"t:source {payload}", encoding=None)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 30
            while chan._recv_window and loop.time() < deadline:  # the client's own count
                await asyncio.sleep(0.01)
            assert chan._recv_window == 0
            assert (await conn.run("t:args still", check=True)).stdout == "[still]\n"
            chan.resume_reading()
            await chan.wait_closed()
            return b"".join(held.data)

    data = asyncio.run(scenario())
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload.read_bytes()).digest()
