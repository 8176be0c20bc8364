"""The embedded server's send path (``gokku.ssh.sendpath``), seen from an asyncssh client
that counts the packets it receives: with an AEAD cipher a download is data packets only
(no empty SSH_MSG_IGNORE before each), with a CBC/CTR-era cipher the countermeasure is
still there, and either way every byte arrives in order."""

import asyncio
import hashlib
import itertools
import logging
import re
from pathlib import Path

import asyncssh
import pytest
from sshkit import *  # noqa: F403 - fixtures
from sshkit import KeyPair

SIZE = 4 << 20
PIECES = (1, 7, 32768 + 5, 100_003, 16, 262_147)  # bytes per write of an upload
RECEIVED = re.compile(r"\] Received (MSG_\w+) \(")


class PacketCounter(logging.Handler):
    """Counts asyncssh's 'Received MSG_...' packet log lines by message name."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.counts: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if found := RECEIVED.search(record.getMessage()):
            self.counts[found[1]] = self.counts.get(found[1], 0) + 1


def _download(port: int, key: KeyPair, path: Path, cipher: str) -> tuple[bytes, dict[str, int]]:
    logger = logging.getLogger("asyncssh")
    counter = PacketCounter()
    level = logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    asyncssh.set_debug_level(3)

    async def scenario() -> bytes:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="gokku",
            client_keys=[str(key.path)],
            known_hosts=None,
            agent_path=None,
            encryption_algs=[cipher],
        ) as conn:
            result = await conn.run(f"t:source {path}", encoding=None, check=True)
            return result.stdout

    try:
        return asyncio.run(scenario()), counter.counts
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
    data, counts = _download(server, alice, payload, "aes128-gcm@openssh.com")
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload.read_bytes()).digest()
    assert counts.get("MSG_CHANNEL_DATA", 0) >= SIZE // 32768
    assert counts.get("MSG_IGNORE", 0) == 0, counts


@pytest.mark.parametrize("ssh_settings", [{"ciphers": "aes128-ctr"}])
def test_other_ciphers_keep_the_ignore_countermeasure(server, alice, test_plugin, payload) -> None:
    data, counts = _download(server, alice, payload, "aes128-ctr")
    assert hashlib.sha256(data).digest() == hashlib.sha256(payload.read_bytes()).digest()
    assert counts.get("MSG_IGNORE", 0) >= counts.get("MSG_CHANNEL_DATA", 0) >= SIZE // 32768


def _upload(port: int, key: KeyPair, data: bytes, cipher: str) -> str:
    """``data`` written in pieces of uneven sizes (a byte, a packet and a bit, ...), so
    the server's socket reads end anywhere in a packet; the command's sha256 of stdin."""

    async def scenario() -> str:
        async with asyncssh.connect(
            "127.0.0.1",
            port,
            username="gokku",
            client_keys=[str(key.path)],
            known_hosts=None,
            agent_path=None,
            encryption_algs=[cipher],
        ) as conn:
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
