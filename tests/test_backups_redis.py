"""Redis backups kept on the server: BGSAVE snapshots in the service's backups directory,
their retention, a restore into a new service, and the append-only file; with real
redis-server processes (see bundled_support)."""

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import reachable_root, server_pid, wait_gone
from conftest import Gokku
from sshkit import kill_with_its_script

pytestmark = pytest.mark.skipif(
    not shutil.which("redis-server"), reason="redis-server is not installed"
)


@pytest.fixture(scope="module")
def gk() -> Iterator[Gokku]:
    with reachable_root("redis") as gokku:
        yield gokku


@pytest.fixture
def svc(gk: Gokku, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh service per test, named for it, with two keys."""
    name = request.node.name.split("[")[0].removeprefix("test_")[:40].replace("_", "-")
    gk.ok("services:create", "redis", "--name", name)
    gk.ok("redis:connect", name, input=b"SET a 1\nSET b 2\n")
    yield name
    gk("redis:destroy", name, "--force")


def backups(gk: Gokku, name: str) -> list[dict]:
    return json.loads(gk.ok("redis:backups", name, "--format", "json").stdout)


def backups_dir(gk: Gokku, name: str) -> Path:
    return gk.root / "services" / name / "backups"


def get(gk: Gokku, name: str, key: str) -> str:
    return gk.ok("redis:connect", name, "GET", key).stdout.strip()


def test_a_backup_is_a_sound_snapshot_of_the_data_at_that_moment(gk: Gokku, svc: str) -> None:
    first = gk.ok("redis:backup", svc)
    label = first.stdout.strip()
    assert f"Backup {label} of {svc}: " in first.stderr
    gk.ok("redis:connect", svc, "SET", "c", "3")  # after it: not in it
    [listed] = backups(gk, svc)
    assert listed["label"] == label
    path = backups_dir(gk, svc) / f"{label}.rdb"
    assert listed["size"] == path.stat().st_size
    assert listed["created"][:10] == f"{label[:4]}-{label[4:6]}-{label[6:8]}"
    check = subprocess.run(["redis-check-rdb", str(path)], capture_output=True, text=True)
    assert check.returncode == 0 and "Checksum OK" in check.stdout
    table = gk.ok("redis:backups", svc).stdout.splitlines()
    assert table[0].split() == ["LABEL", "CREATED", "SIZE"]
    assert table[1].split()[:2] == [label, listed["created"]]

    gk.ok("redis:restore", svc, "--backup", label, "--into", f"{svc}-r")
    try:
        assert (get(gk, f"{svc}-r", "a"), get(gk, f"{svc}-r", "c")) == ("1", "")
    finally:
        gk.ok("redis:destroy", f"{svc}-r", "--force")


def test_a_killed_backup_leaves_nothing_listed_and_the_next_one_succeeds(
    gk: Gokku, svc: str
) -> None:
    # About 20 MB that LZF cannot shrink: the copy and its check take a while.
    values = (base64.b64encode(os.urandom(10 * 1024)).decode() for _ in range(2000))
    writes = "".join(f"SET big:{i} {value}\n" for i, value in enumerate(values))
    gk.ok("redis:connect", svc, input=writes.encode())
    folder = backups_dir(gk, svc)
    backup = subprocess.Popen(
        [sys.executable, "-m", "gokku", "redis:backup", svc],
        env=gk.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(folder.glob(".*.partial")) and backup.poll() is None:
            assert time.monotonic() < deadline, "the backup never started copying"
            time.sleep(0.001)
        if backup.poll() is None:
            kill_with_its_script(backup)  # the backup and everything it started, at once
    finally:
        backup.wait()
    assert backup.returncode == -signal.SIGKILL, "the backup finished before it was killed"
    assert list(folder.glob(".*.partial"))  # what it left, hidden
    assert backups(gk, svc) == []
    gk.ok("redis:connect", svc, "SET", "still", "writable")  # the service is unharmed
    label = gk.ok("redis:backup", svc).stdout.strip()
    assert [b["label"] for b in backups(gk, svc)] == [label]
    assert not list(folder.glob(".*.partial"))


def test_retention_by_count_and_by_days(gk: Gokku, svc: str) -> None:
    labels = [gk.ok("redis:backup", svc).stdout.strip() for _ in range(3)]
    assert gk.ok("redis:backup-retention", svc).stdout == "all backups are kept\n"
    gk.ok("redis:backup-retention", svc, "--full", "2")
    assert [b["label"] for b in backups(gk, svc)] == labels[1:]
    newest = gk.ok("redis:backup", svc).stdout.strip()  # applied after each backup too
    assert [b["label"] for b in backups(gk, svc)] == [labels[2], newest]
    assert gk.ok("redis:backup-retention", svc).stdout == "full 2\n"

    # A backup from 2020, named as the backup command names them.
    old = backups_dir(gk, svc) / "20200101-000000-000.rdb"
    shutil.copy(backups_dir(gk, svc) / f"{newest}.rdb", old)
    gk.ok("redis:backup-retention", svc, "--days", "7")
    assert [b["label"] for b in backups(gk, svc)] == [labels[2], newest]
    assert not old.exists()
    for bad in (["--full", "0"], ["--days", "x"], ["--weeks", "2"], ["--full"]):
        before = gk.snapshot()
        refused = gk("redis:backup-retention", svc, *bad)
        assert refused.code == 2 and refused.stderr.count("\n") == 1, bad
        assert gk.snapshot() == before


def test_restore_makes_a_new_service_from_the_latest_backup_by_default(gk: Gokku, svc: str) -> None:
    missing = gk("redis:restore", svc)
    assert missing.code == 1 and f"service {svc} has no backups to restore" in missing.stderr
    gk.ok("redis:backup", svc)
    gk.ok("redis:connect", svc, "SET", "a", "changed")
    gk.ok("redis:backup", svc)
    gk.ok("redis:connect", svc, "SET", "a", "later")
    done = gk.ok("redis:restore", svc)
    new = done.stderr.rsplit(" into ", 1)[1].strip()
    assert gk.ok("services:config-get", new, "port").code == 0
    assert new.startswith(f"{svc[:38]}-restored-")  # the name kept within 63 characters
    try:
        assert get(gk, new, "a") == "changed"
        assert get(gk, svc, "a") == "later"  # the original is untouched
        # Into a service that exists: refused, that service as it was.
        before = get(gk, new, "a")
        taken = gk("redis:restore", svc, "--latest", "--into", new)
        assert taken.code != 0 and "already exists" in taken.stderr
        assert get(gk, new, "a") == before
    finally:
        gk.ok("redis:destroy", new, "--force")
    unknown = gk("redis:restore", svc, "--backup", "20200101-000000-000")
    assert unknown.code == 1 and "has no backup '20200101-000000-000'" in unknown.stderr
    listed = json.loads(gk.ok("services:list", "--format", "json").stdout)
    assert sorted(s["name"] for s in listed) == [svc]


def test_appendonly_is_set_at_once_and_kept_across_a_restart(gk: Gokku, svc: str) -> None:
    def appendonly() -> str:
        return gk.ok("redis:connect", svc, "CONFIG", "GET", "appendonly").stdout.split()[1]

    assert appendonly() == "no"
    gk.ok("redis:set", svc, "appendonly", "yes")
    assert appendonly() == "yes"
    pid = server_pid(gk.root / "services" / svc)
    gk.ok("redis:restart", svc)
    assert wait_gone(pid)
    assert appendonly() == "yes"
    assert get(gk, svc, "a") == "1"
    # An import replaces the data, not only the snapshot the append-only files outrank.
    snapshot = gk.ok("redis:export", svc).out
    gk.ok("redis:connect", svc, "SET", "a", "after-export")
    gk.ok("redis:import", svc, input=snapshot)
    assert (get(gk, svc, "a"), appendonly()) == ("1", "yes")
    gk.ok("redis:restart", svc)
    assert get(gk, svc, "a") == "1"
    for bad in (["appendonly", "maybe"], ["maxmemory", "1"], ["appendonly"]):
        refused = gk("redis:set", svc, *bad)
        assert refused.code == 2 and refused.stderr.count("\n") == 1, bad
    assert appendonly() == "yes"
    gk.ok("redis:set", svc, "appendonly", "no")
    assert appendonly() == "no"
