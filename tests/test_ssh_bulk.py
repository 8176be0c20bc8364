"""Volume through both doors: 200 MB each way, ten times in a row, byte-exact; and 50
sessions at once. The data is made for each door's test and streamed; hashes are
computed on the fly, so the test costs what the transfers cost."""

import concurrent.futures
import hashlib
import os
import subprocess
import time
from pathlib import Path

import pytest
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door
from sshlab import server_log

SIZE = 200 << 20
ROUNDS = 10


@pytest.fixture
def payload(tmp_path: Path) -> tuple[Path, str]:
    """200 MB no two MiB of which are alike, and its hash: made for each door's test (a
    second's work), so that the two doors' rounds can run on two workers at once."""
    path = tmp_path / "payload"
    digest = hashlib.sha256()
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for index in range(SIZE >> 20):
            chunk = index.to_bytes(8, "big") + block[8:]  # no two MiB alike
            digest.update(chunk)
            out.write(chunk)
    yield path, digest.hexdigest()
    path.unlink()


def _upload(door: Door, path: Path) -> str:
    with open(path, "rb") as data:
        proc = subprocess.run(
            door.ssh_argv() + ["t:sink"], stdin=data, capture_output=True, timeout=120
        )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.decode().strip()


def _download(door: Door, path: Path) -> str:
    digest = hashlib.sha256()
    proc = subprocess.Popen(door.ssh_argv() + [f"t:source {path}"], stdout=subprocess.PIPE)
    while chunk := proc.stdout.read(1 << 20):
        digest.update(chunk)
    assert proc.wait(120) == 0
    return digest.hexdigest()


def test_200_mb_each_way_ten_times(door: Door, payload: tuple[Path, str]) -> None:
    path, expected = payload
    timings = {"up": 0.0, "down": 0.0}
    for _ in range(ROUNDS):
        for direction, transfer in (("up", _upload), ("down", _download)):
            started = time.monotonic()
            assert transfer(door, path) == expected, f"{direction} corrupted"
            timings[direction] += time.monotonic() - started
    rates = {k: f"{SIZE * ROUNDS / v / 1e6:.0f} MB/s" for k, v in timings.items()}
    print(f"\n{door.kind}: upload {rates['up']}, download {rates['down']}")
    audit = door.audit()
    assert {e["bytes_in"] for e in audit if e["argv"] == ["t:sink"]} == {SIZE}
    assert {e["bytes_out"] for e in audit if e["argv"][0] == "t:source"} == {SIZE}


def test_50_concurrent_sessions(door: Door) -> None:
    def one(index: int) -> tuple[int, str, str]:
        result = door.ssh(f"t:args session-{index} 'x y'", timeout=120)
        return result.code, result.stdout, result.stderr

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        results = list(pool.map(one, range(50)))
    said = [err for _, _, err in results if err]  # what a failed session was told
    log = server_log(door.root).read_text() if door.kind == "embedded" else ""
    expected = [(0, f"[session-{i}]\n[x y]\n") for i in range(50)]
    assert [r[:2] for r in results] == expected, (said, log[-2000:])
