"""The audit log under stress: a line cut short before, a full disk (a write refused or
cut short), and other writers holding the file's lock. Commands run through the door
both SSH doors end in (``gokku ssh-command`` with ``SSH_ORIGINAL_COMMAND``), as sshd runs it."""

import fcntl
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, Gokku, Result
from diskfull import fill, tmpfs
from sshkit import wait_until
from sshlab import make_key

CONNECTION = "192.0.2.7 50000 127.0.0.1 22"


@dataclass
class Door:
    """An admin key's forced command, run as sshd runs it (the embedded server too)."""

    gokku: Gokku
    fingerprint: str

    def argv(self) -> list[str]:
        return [sys.executable, "-m", "gokku", "ssh-command", "--fingerprint", self.fingerprint]

    def env(self, command: str) -> dict[str, str]:
        return {**self.gokku.env, "SSH_CONNECTION": CONNECTION, "SSH_ORIGINAL_COMMAND": command}

    def __call__(self, command: str) -> Result:
        return self.gokku(*self.argv()[3:], env=self.env(command))


@pytest.fixture
def door(gokku: Gokku, tmp_path: Path) -> Door:
    key = make_key(tmp_path, "alice")
    gokku.ok("ssh-keys:add", "alice", "--role", "admin", input=key.public.encode())
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "-a", "api", "K=v")
    (listed,) = json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout)
    return Door(gokku, listed["fingerprint"])


def _lines(gokku: Gokku) -> list[str]:
    return (gokku.root / "log" / "audit.log").read_text().splitlines()


def test_a_line_cut_short_before_does_not_swallow_the_next(gokku: Gokku, door: Door) -> None:
    log = gokku.root / "log" / "audit.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text('{"time":"2026-01-01T00:00:00Z","argv":["conf')  # a write cut short
    result = door("config:get -a api K")
    assert result.out == b"v\n" and result.err == b""
    cut, entry = _lines(gokku)
    assert cut.endswith('["conf')
    assert json.loads(entry)["argv"] == ["config:get", "-a", "api", "K"]


def test_a_full_log_disk_fails_no_command_and_leaves_no_partial_line(
    gokku: Gokku, door: Door
) -> None:
    with tmpfs(gokku.root / "log") as folder:
        log = folder / "audit.log"
        # Valid lines filling most of one page: the next line fits only in part (the
        # kernel writes what fits, a short write), and the disk has nothing more.
        pad = '{"pad":"' + "x" * 90 + '"}\n'
        log.write_text(pad * (4000 // len(pad)))
        before = log.read_bytes()
        filler = fill(folder)

        ok = door("config:get -a api K")
        assert ok.code == 0 and ok.out == b"v\n"
        (warning,) = ok.stderr.splitlines()
        assert warning.startswith(" !     the audit line was not written ("), warning
        usage = door("config:get")  # fails on its own: exit 2 stays exit 2
        assert usage.code == 2
        assert usage.stderr.splitlines()[1].startswith(" !     the audit line was not written")
        assert log.read_bytes() == before  # the part that fit was taken back

        filler.unlink()
        door("version")
        entries = [json.loads(line) for line in _lines(gokku)]
    assert entries[-1]["argv"] == ["version"]


def test_the_writer_waits_for_the_log_lock(gokku: Gokku, door: Door) -> None:
    """Taking back a partial line truncates the file: only safe while no one else writes."""
    log = gokku.root / "log" / "audit.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        proc = subprocess.Popen(
            door.argv(),
            env=door.env("version"),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        assert wait_until(lambda: _waits_for_a_lock(proc.pid), 30)
        assert proc.poll() is None and log.stat().st_size == 0
    assert proc.wait(timeout=30) == 0
    (entry,) = _lines(gokku)
    assert json.loads(entry)["argv"] == ["version"]


def _waits_for_a_lock(pid: int) -> bool:
    """``pid`` is blocked on a file lock (a ``->`` line of /proc/locks names the waiters)."""
    lines = Path("/proc/locks").read_text().splitlines()
    return any(line.split()[1] == "->" and line.split()[5] == str(pid) for line in lines)


def test_a_removed_key_still_gets_its_line(door: Door) -> None:
    """A connection still open when its key was removed is refused, and logged."""
    door.gokku.ok("ssh-keys:remove", "alice")
    result = door("version")
    assert result.code == 1 and "no longer registered" in result.stderr
    (entry,) = [json.loads(line) for line in _lines(door.gokku)]
    assert entry["argv"] == ["version"] and entry["fingerprint"] == door.fingerprint
    assert entry["denied"].startswith("this key is no longer registered")


@pytest.mark.parametrize(
    "number", ["²", "٣", "-1"], ids=["superscript", "arabic-indic", "negative"]
)
def test_a_deploy_number_in_other_digits_is_a_usage_error(door: Door, number: str) -> None:
    """``str.isdigit`` takes ``²`` (``int`` then raises) and ``٣`` (``int`` reads 3)."""
    result = door(f"apps:deploy-log api {number}")
    assert result.code == 2, result.stderr
    assert result.stderr.splitlines() == [
        " !     N must be a deploy's number (see: gokku apps:deploys api)"
    ]
    assert not (door.gokku.root / "log" / "gokku.log").exists()
