"""On the embedded server a lost connection never looks like the end of an upload: the
command reading it is hung up before its stdin closes, so a plugin that commits what it
read on a clean end of input never commits a cut-off upload."""

import contextlib
import subprocess
import threading
from pathlib import Path
from typing import IO

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, group_alive, wait_until

RUNS = 10
MB = 1 << 20
UPLOAD_BYTES = 40 * MB
# Reads stdin to a temporary file; only a clean end of input renames it into place. The
# patient one ignores the hang-up (as one that cleans up first might) until the TERM that
# follows it: an end of input reaching it at any time before would commit.
UPLOAD = """\
dir="$GOKKU_ROOT/../uploads"
echo $$ > "$dir/pgid"
cat > "$dir/part" && mv "$dir/part" "$dir/committed"
"""
PATIENT = "trap '' HUP\n" + UPLOAD


@pytest.fixture
def upload_plugin(gokku: Gokku, tmp_path: Path) -> Path:
    scripts = {"commands/upload": UPLOAD, "commands/patient": PATIENT}
    tree = write_plugin(tmp_path / "src" / "u", commands=scripts)
    (tree / "plugin.yml").write_text(
        "commands:\n  upload: {stdin: data}\n  patient: {stdin: data}\n"
    )
    gokku.ok("plugins:add", str(tree), "--name", "u")
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    return uploads


def _feed(stdin: IO[bytes], total: int) -> None:
    """Write ``total`` bytes, or until the client is gone; never close: no end of input."""
    chunk = b"\0" * MB
    with contextlib.suppress(BrokenPipeError):
        for _ in range(total // MB):
            stdin.write(chunk)
            stdin.flush()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _kill_mid_upload(door: Door, command: str, folder: Path, at: int) -> None:
    """Upload with OpenSSH's client, SIGKILL it once ``at`` bytes reached the plugin (with
    more in flight, and no end of input sent), and wait until the plugin's group is gone."""
    part, pgid_file = folder / "part", folder / "pgid"
    client = subprocess.Popen(
        door.ssh_argv() + [command],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    feeder = threading.Thread(target=_feed, args=(client.stdin, UPLOAD_BYTES))
    feeder.start()
    assert wait_until(lambda: _size(part) >= at, 60), "the upload did not start"
    pgid = int(pgid_file.read_text())
    client.kill()
    client.wait()
    feeder.join()
    with contextlib.suppress(BrokenPipeError):
        client.stdin.close()
    assert wait_until(lambda: not group_alive(pgid), 30), "the plugin was not hung up"
    part.unlink(missing_ok=True)  # renamed into place, if the plugin took it for whole
    pgid_file.unlink()


def test_a_client_killed_mid_upload_never_gets_its_upload_committed(
    gokku: Gokku, server: int, alice: KeyPair, upload_plugin: Path
) -> None:
    door = Door("embedded", server, "gokku", alice, gokku.root)
    committed = upload_plugin / "committed"
    for run in range(RUNS):
        command = "u:patient" if run % 2 else "u:upload"
        _kill_mid_upload(door, command, upload_plugin, (run + 1) * MB)  # a new point each run
        assert not committed.exists(), f"run {run} ({command}): a cut-off upload was committed"
    whole = bytes(range(256)) * (4 * MB // 256)
    assert door.ssh("u:upload", input=whole).code == 0
    assert committed.read_bytes() == whole  # a clean end of input does commit
