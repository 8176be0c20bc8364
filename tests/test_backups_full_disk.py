"""A backup whose repository is on a full disk (a real tmpfs, filled): pgBackRest waits
for WAL it cannot archive (here 5 s, the service's ``backup_wal_wait``, not the default
minute), and the one line says why. Its own module (and server), since that waiting would
hold up the other backup tests' worker."""

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import reachable_root, sql
from conftest import Gokku
from diskfull import fill, tmpfs
from test_backups_postgres import backups
from test_bundled_postgres import PG_BIN

pytestmark = pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries are not installed")


@pytest.fixture(scope="module")
def gk() -> Iterator[Gokku]:
    with reachable_root("postgres") as gokku:
        yield gokku


def test_a_backup_to_a_full_disk_fails_in_one_line_and_the_service_takes_writes(
    gk: Gokku, tmp_path: Path
) -> None:
    gk.ok("services:create", "postgres", "--name", "tight")
    gk.ok("services:config-set", "tight", "backup_wal_wait=5")
    gk.ok("pg:connect", "tight", input=b"create table t (id int);")
    gk.ok("pg:backup", "tight")
    listed = [b["label"] for b in backups(gk, "tight")]
    repo = gk.root / "services" / "tight" / "backup" / "repo"
    saved = tmp_path / "repo"
    subprocess.run(["cp", "-a", f"{repo}/.", str(saved)], check=True)
    owner = repo.stat()
    with tmpfs(repo, "64m"):
        # The repository as it was, on a disk with no space left.
        subprocess.run(["cp", "-a", f"{saved}/.", str(repo)], check=True)
        os.chown(repo, owner.st_uid, owner.st_gid)
        repo.chmod(owner.st_mode & 0o7777)
        fill(repo)
        # pgBackRest waits for the WAL it cannot archive; the error says why it never came.
        refused = gk("pg:backup", "tight")
        assert refused.code == 1
        assert refused.stderr.splitlines()[-1].startswith(" !     backup of tight failed: ")
        assert "No space left on device" in refused.stderr, refused.stderr
        assert "before the 5000ms timeout" in refused.stderr, refused.stderr
        # The server takes writes, and no half backup is listed.
        gk.ok("pg:connect", "tight", input=b"insert into t values (1);")
        assert [b["label"] for b in backups(gk, "tight")] == listed
    gk.ok("pg:backup", "tight")
    assert len(backups(gk, "tight")) == len(listed) + 1
    # A wait that is not whole seconds is refused before anything is backed up.
    gk.ok("services:config-set", "tight", "backup_wal_wait=soon")
    bad = gk("pg:backup", "tight")
    assert bad.code != 0
    assert (
        bad.stderr.strip()
        .splitlines()[-1]
        .endswith(
            "backup_wal_wait of tight is 'soon': give seconds "
            "(gokku services:config-set tight backup_wal_wait=60)"
        )
    ), bad.stderr
    assert len(backups(gk, "tight")) == len(listed) + 1
    assert sql(gk, "tight", "select count(*) from t") == "1"
    gk.ok("pg:destroy", "tight", "--force")
