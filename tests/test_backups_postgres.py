"""Backups of the bundled postgres plugin, by pgBackRest, on real servers (see
bundled_support): WAL archiving, backups, restores."""

import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from bundled_support import reachable_root, run_in_pty, sql
from conftest import Gokku
from sshkit import processes_under, wait_until
from test_bundled_postgres import PG_BIN

pytestmark = pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries are not installed")

# The module's tests take minutes one after another, so they run in three groups, each on
# a worker with its own root and service (the module fixtures are made once per worker).
# A group's first backup of ``db`` is a full one, whatever the type asked (pgBackRest's
# rule when there is none), so each group's incremental backups still make chains.
ARCHIVING = pytest.mark.xdist_group("test_backups_postgres.archiving")
RESTORES = pytest.mark.xdist_group("test_backups_postgres.restores")
RETENTION = pytest.mark.xdist_group("test_backups_postgres.retention")


@pytest.fixture(scope="module")
def gk() -> Iterator[Gokku]:
    with reachable_root("postgres") as gokku:
        yield gokku


@pytest.fixture(scope="module")
def db(gk: Gokku) -> str:
    """A running service with a table of commits (one row each, with its commit time)."""
    gk.ok("services:create", "postgres", "--name", "db")
    gk.ok(
        "pg:connect",
        "db",
        input=b"create table t (id serial primary key, at timestamptz default clock_timestamp());",
    )
    return "db"


def backups(gk: Gokku, service: str) -> list[dict]:
    return json.loads(gk.ok("pg:backups", service, "--format", "json").stdout)


def epoch(stamp: str) -> int:
    """Seconds since the epoch of a listed time (UTC, ISO 8601)."""
    return int(datetime.fromisoformat(stamp).timestamp())


def kept(gk: Gokku, service: str) -> list[dict]:
    """The backups as a refused command must leave them: everything but the span's end,
    which moves on its own whenever the server archives another WAL segment."""
    return [{k: v for k, v in b.items() if k != "restorable_until"} for b in backups(gk, service)]


def one_line_refusal(gk: Gokku, *args: str, code: int | None = None, input: bytes = b"") -> str:
    """Run a command that must be refused: non-zero, one line on stderr; that line."""
    result = gk(*args, input=input)
    assert result.code != 0 if code is None else result.code == code, (result.code, args)
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr


def archived_segments(gk: Gokku, service: str) -> list[Path]:
    archive = gk.root / "services" / service / "backup" / "repo" / "archive" / service
    return sorted(archive.glob("*/*/0*"))


@ARCHIVING
def test_every_service_archives_its_wal_through_pgbackrest(gk: Gokku, db: str) -> None:
    service_dir = gk.root / "services" / db
    command = sql(gk, db, "show archive_command")
    assert "pgbackrest" in command and f"--stanza={db} archive-push" in command
    # The local repository alone (the off-site targets get the WAL from there).
    assert f'--config="{service_dir}/backup/archive.conf"' in command
    assert sql(gk, db, "show archive_mode") == "on"
    assert sql(gk, db, "show archive_timeout") == "1min"
    before = len(archived_segments(gk, db))
    switched = sql(gk, db, "select pg_walfile_name(pg_switch_wal())", "--superuser")

    def archived() -> bool:
        return any(p.name.startswith(switched) for p in archived_segments(gk, db))

    assert wait_until(archived, 60)
    assert len(archived_segments(gk, db)) > before

    # A service made before backups existed (no archive settings, no repository) gets them
    # on its next start; the timeout comes from the service's config.
    gk.ok("pg:stop", db)
    conf = service_dir / "data" / "postgresql.conf"
    conf.write_text(conf.read_text().replace("include_if_exists 'gokku-backup.conf'\n", ""))
    (service_dir / "data" / "gokku-backup.conf").unlink()
    subprocess.run(["rm", "-rf", str(service_dir / "backup")], check=True)
    gk.ok("services:config-set", db, "archive_timeout=30")
    gk.ok("pg:start", db)
    assert sql(gk, db, "show archive_mode") == "on"
    assert sql(gk, db, "show archive_timeout") == "30s"
    assert (service_dir / "backup" / "pgbackrest.conf").exists()
    gk.ok("pg:backup", db)
    assert [b["type"] for b in backups(gk, db)] == ["full"]


@ARCHIVING
def test_backups_full_diff_incr_listed_while_the_service_takes_writes(gk: Gokku, db: str) -> None:
    before = {b["label"] for b in backups(gk, db)}
    # A writer commits a row every 20 ms over one connection for the whole time.
    writer = subprocess.Popen(
        [sys.executable, "-m", "gokku", "pg:connect", db],
        env=gk.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    stop = threading.Event()

    def write() -> None:
        while not stop.is_set():
            writer.stdin.write(b"insert into t default values; select pg_sleep(0.02);\n")
            writer.stdin.flush()
            stop.wait(0.02)

    feeder = threading.Thread(target=write)
    feeder.start()
    try:
        for kind in ("full", "incr", "diff"):
            gk.ok("pg:backup", db, "--type", kind)
    finally:
        stop.set()
        feeder.join()
        writer.stdin.close()
        assert writer.wait(timeout=60) == 0, writer.stderr.read()
    listed = [b for b in backups(gk, db) if b["label"] not in before]
    assert [b["type"] for b in listed] == ["full", "incr", "diff"]
    full = listed[0]
    assert full["label"].endswith("F") and listed[1]["label"].startswith(full["label"] + "_")
    for backup in listed:
        assert backup["size_bytes"] > 0 and backup["database_bytes"] > backup["size_bytes"]
        assert backup["duration_seconds"] >= 0
        # The second after its end: pgBackRest records the end to the second.
        assert epoch(backup["restorable_from"]) == epoch(backup["stop"]) + 1
        assert backup["restorable_until"] >= backup["restorable_from"]
    # Rows were committed while each backup ran: it never stopped the writes.
    for backup in listed:
        during = sql(
            gk,
            db,
            f"select count(*) from t where at between '{backup['start']}' and '{backup['stop']}'",
        )
        assert int(during) > 0, backup
    text = gk.ok("pg:backups", db).stdout
    assert text.startswith(f"=====> postgres backups of {db}\nLABEL ")
    assert all(b["label"] in text for b in listed)


@ARCHIVING
def test_a_backup_killed_half_way_is_not_listed_and_the_next_one_succeeds(
    gk: Gokku, db: str
) -> None:
    # 64 MiB that zstd cannot shrink: the backup takes long enough to be caught.
    gk.ok(
        "pg:connect",
        db,
        input=b"create table filler as select g as id,"
        b" decode(string_agg(md5(random()::text || g || i), ''), 'hex') as body"
        b" from generate_series(1, 16384) g, generate_series(1, 256) i group by g;",
    )
    listed = [b["label"] for b in backups(gk, db)]
    backup = subprocess.Popen(
        [sys.executable, "-m", "gokku", "pg:backup", db],
        env=gk.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    repo = gk.root / "services" / db / "backup" / "repo" / "backup" / db

    def copying() -> list[int]:
        """pgBackRest's processes once it copies files into a new backup's directory."""
        started = [d for d in repo.glob("*F") if d.name not in listed and any(d.rglob("*.zst"))]
        return processes_under(gk.root, b"pgbackrest") if started else []

    assert wait_until(copying, 60), "the backup never started copying"
    for pid in copying():
        os.kill(pid, signal.SIGKILL)
    assert backup.wait(timeout=60) != 0
    assert f"backup of {db} failed" in backup.stderr.read().decode()
    assert [b["label"] for b in backups(gk, db)] == listed
    gk.ok("pg:backup", db)
    after = backups(gk, db)
    assert len(after) == len(listed) + 1 and after[-1]["type"] == "full"
    gk.ok("pg:connect", db, input=b"drop table filler;")


@ARCHIVING
def test_bad_input_is_one_line_and_changes_nothing(gk: Gokku, db: str) -> None:
    listed = kept(gk, db)
    assert "unknown backup type 'weekly'" in one_line_refusal(
        gk, "pg:backup", db, "--type", "weekly", code=2
    )
    assert "unknown argument '--fast'" in one_line_refusal(gk, "pg:backup", db, "--fast", code=2)
    assert "unknown format 'yaml'" in one_line_refusal(
        gk, "pg:backups", db, "--format", "yaml", code=2
    )
    for command in ("backup", "backups"):
        assert one_line_refusal(gk, f"pg:{command}", "nope", code=1) == (
            " !     service 'nope' does not exist (see: gokku services:list)\n"
        )
    assert kept(gk, db) == listed


def ids(gk: Gokku, service: str, where: str = "true") -> list[int]:
    listed = sql(
        gk,
        service,
        f"select coalesce(string_agg(id::text, ',' order by id), '') from t where {where}",
    )
    return [int(i) for i in listed.split(",") if i]


def services(gk: Gokku) -> list[str]:
    return [s["name"] for s in json.loads(gk.ok("services:list", "--format", "json").stdout)]


@RESTORES
def test_point_in_time_restore_into_a_new_service_has_exactly_the_rows_committed_before(
    gk: Gokku, db: str
) -> None:
    gk.ok("pg:backup", db, "--type", "incr")
    before = int(sql(gk, db, "insert into t default values returning id"))
    # A time after that commit and before the next one, by the server's clock, and one
    # the backup restores to (from the second after it ended).
    since = backups(gk, db)[-1]["restorable_from"]
    assert wait_until(lambda: sql(gk, db, f"select now() >= '{since}'") == "t", 10)
    moment = sql(gk, db, "select pg_sleep(0.5), clock_timestamp()::text").split("|")[1]
    sql(gk, db, "select pg_sleep(0.5)")
    after = int(sql(gk, db, "insert into t default values returning id"))
    assert after > before

    gk.ok("pg:restore", db, "--time", moment, "--into", "pitr")
    assert ids(gk, "pitr") == ids(gk, db, f"id <= {before}")
    assert before in ids(gk, "pitr") and after not in ids(gk, "pitr")
    # A service of its own: another port and password, its database named after it.
    for key in ("port", "password"):
        mine = gk.ok("services:config-get", "pitr", key).stdout
        assert mine != gk.ok("services:config-get", db, key).stdout
    assert sql(gk, "pitr", "select current_database()") == "pitr"
    # The original is untouched and archives on; so does the restored one, on its own.
    assert after in ids(gk, db)
    gk.ok("pg:backup", "pitr")
    assert [b["type"] for b in backups(gk, "pitr")] == ["full"]
    gk.ok("pg:destroy", "pitr", "--force")

    listed = services(gk)
    first = backups(gk, db)[0]
    early = one_line_refusal(gk, "pg:restore", db, "--time", "2001-01-01 00:00 UTC", code=1)
    assert f"is before the first time {db} can be restored to ({first['restorable_from']}" in early
    # Within the second the first backup ended, after its end: pgBackRest finds no backup
    # for it, so it is refused before a service is made.
    same_second = first["stop"].replace("Z", ".999Z")
    assert "is before the first time" in one_line_refusal(
        gk, "pg:restore", db, "--time", same_second, code=1
    )
    late = one_line_refusal(gk, "pg:restore", db, "--time", "2999-01-01 00:00 UTC", code=1)
    assert f"is after the last archived WAL of {db}" in late
    assert services(gk) == listed


@RESTORES
def test_clone_has_every_row_committed_before_it(gk: Gokku, db: str) -> None:
    gk.ok("pg:backup", db, "--type", "incr")
    # Committed after the backup, and in no archived segment yet.
    newest = int(sql(gk, db, "insert into t default values returning id"))
    gk.ok("pg:clone", db, "copy")
    assert ids(gk, "copy") == ids(gk, db, f"id <= {newest}")
    assert "already exists" in one_line_refusal(gk, "pg:clone", db, "copy", code=1)
    gk.ok("pg:destroy", "copy", "--force")


@ARCHIVING
def test_a_clone_of_an_exposed_service_listens_on_loopback_only(gk: Gokku) -> None:
    # The source's data directory carries its expose settings (and the path of its own
    # certificate): the copy must not listen beyond this host because the source does.
    gk.ok("services:create", "postgres", "--name", "open")
    gk.ok("pg:expose", "open")
    gk.ok("pg:clone", "open", "shut")
    assert gk.ok("pg:info", "shut", "--exposed-ports").stdout == "-\n"
    assert sql(gk, "shut", "select 1") == "1"
    assert gk.ok("pg:info", "open", "--exposed-ports").stdout.strip().isdigit()
    for name in ("shut", "open"):
        gk.ok("pg:destroy", name, "--force")


@RESTORES
def test_restore_in_place_needs_force_and_the_typed_name_on_a_terminal(gk: Gokku, db: str) -> None:
    gk.ok("pg:backup", db, "--type", "diff")
    label = backups(gk, db)[-1]["label"]
    kept = ids(gk, db)
    later = int(sql(gk, db, "insert into t default values returning id"))
    port = gk.ok("services:config-get", db, "port").stdout
    args = ("pg:restore", db, "--backup", label, "--force")
    assert "confirm on a terminal (ssh -t) with --force" in one_line_refusal(gk, *args, code=1)

    def typing(answer: bytes):
        """The restore on a terminal, with ``answer`` typed at the confirmation."""
        terminals = {"stdin_tty": True, "stdout_tty": True, "stderr_tty": True}
        return run_in_pty(gk, *args, **terminals, dialogue=((rb'type "db": ', answer),))

    typo = typing(b"bd\r")
    assert typo.code == 1 and b"confirmation did not match 'db': nothing was restored" in typo.out
    assert later in ids(gk, db)

    done = typing(b"db\r")
    assert done.code == 0, done.out
    assert ids(gk, db) == kept
    assert gk.ok("services:config-get", db, "port").stdout == port
    assert not (gk.root / "services" / db / "data.before-restore").exists()
    # Archiving goes on (on a new timeline), and so do backups.
    gk.ok("pg:backup", db, "--type", "incr")


@RETENTION
def test_retention_keeps_the_newest_full_backups_and_only_the_wal_they_need(
    gk: Gokku, db: str
) -> None:
    assert "keeps every backup" in gk.ok("pg:backup-retention", db).stdout
    gk.ok("pg:backup", db)
    gk.ok("pg:backup", db, "--type", "incr")
    gk.ok("pg:backup", db)
    listed = backups(gk, db)
    newest = listed[-1]
    assert newest["type"] == "full" and len(listed) >= 3
    assert min(p.name[:24] for p in archived_segments(gk, db)) < newest["wal_start"]

    said = gk.ok("pg:backup-retention", db, "--full", "1")
    assert said.stderr == f"-----> {db} keeps the newest 1 full backups\n"
    assert [b["label"] for b in backups(gk, db)] == [newest["label"]]
    # WAL from the start of the one backup kept on; none older.
    assert min(p.name[:24] for p in archived_segments(gk, db)) == newest["wal_start"]
    gone = one_line_refusal(gk, "pg:restore", db, "--time", listed[0]["stop"], code=1)
    assert "is before the first time" in gone
    gk.ok("pg:backup", db, "--type", "diff")
    assert len(backups(gk, db)) == 2

    gk.ok("pg:backup-retention", db, "--days", "7")
    assert "full backups of the last 7 days" in gk.ok("pg:backup-retention", db).stdout
    assert len(backups(gk, db)) == 2
    for bad in (["--full", "0"], ["--days", "x"], ["--weeks", "1"], ["--full"]):
        one_line_refusal(gk, "pg:backup-retention", db, *bad, code=2)
    assert "full backups of the last 7 days" in gk.ok("pg:backup-retention", db).stdout


@RETENTION
def test_verify_restores_the_newest_backup_and_check_speaks_nagios(gk: Gokku, db: str) -> None:
    gk.ok("pg:backup", db, "--type", "incr")
    backup_dir = gk.root / "services" / db / "backup"
    verified = gk.ok("pg:backup-verify", db)
    assert "restored, started and answered" in verified.stderr.splitlines()[-1]
    assert not list(backup_dir.glob("verify.*")), "the scratch cluster was left behind"
    assert not processes_under(backup_dir, b"verify."), "the scratch server was left running"

    # One damaged file in the newest backup: verify names it and fails.
    newest = backups(gk, db)[-1]
    label = newest["label"]
    victim = max((backup_dir / "repo" / "backup" / db / label).rglob("*.zst"), key=os.path.getsize)
    original = victim.read_bytes()
    victim.write_bytes(original[:100] + bytes(b ^ 0xFF for b in original[100:108]) + original[108:])
    try:
        damaged = one_line_refusal(gk, "--quiet", "pg:backup-verify", db, code=1)
    finally:
        victim.write_bytes(original)
    assert f"the backups of {db} are damaged: invalid checksum" in damaged
    assert str(victim.relative_to(backup_dir / "repo" / "backup" / db)) in damaged

    ok = gk("pg:backup-check", db)
    assert ok.code == 0 and ok.stdout.startswith(
        f"BACKUP OK - {db}: newest backup {label} ({newest['type']}) ended {newest['stop']}"
    )
    assert ok.stdout.count("\n") == 1
    late = gk("pg:backup-check", db, "--max-age", "1s")
    assert late.code == 1 and late.stdout.startswith(f"BACKUP WARNING - {db}: newest backup")
    archive = backup_dir / "repo" / "archive" / db
    try:  # the server's user can no longer write into the archive
        for directory in (archive, *archive.rglob("*")):
            if directory.is_dir():
                directory.chmod(0o500)

        def archiving_fails() -> bool:
            """A new segment to archive, each time: then the check has a failure to see."""
            sql(gk, db, "select pg_switch_wal() from (select txid_current()) x", "--superuser")
            return gk("pg:backup-check", db).code == 2

        assert wait_until(archiving_fails, 120)
        failing = gk("pg:backup-check", db).stdout
        assert failing.startswith(f"BACKUP CRITICAL - {db}: WAL archiving fails (segment 0")
    finally:
        for directory in (archive, *archive.rglob("*")):
            if directory.is_dir():
                directory.chmod(0o750)
    assert gk("pg:backup-check", db, "--max-age", "1y").code == 2


@RESTORES
def test_an_exported_backup_restores_as_a_new_service_and_a_damaged_one_creates_nothing(
    gk: Gokku, db: str, tmp_path: Path
) -> None:
    gk.ok("pg:backup", db, "--type", "incr")  # a chain: the file holds the full one too
    newest = backups(gk, db)[-1]
    rows = ids(gk, db)
    exported = gk.ok("pg:backup-export", db)
    assert f"-----> {db}: " in exported.stderr
    assert exported.out[257:262] == b"ustar"  # a plain tar, nothing of our own
    # Encrypted to an age key: only its private key gives back the same file.
    key = tmp_path / "key.txt"
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(
        ["age-keygen", "-y", str(key)], check=True, capture_output=True, text=True
    ).stdout.strip()
    sealed = gk.ok("pg:backup-export", db, newest["label"], "--recipient", public).out
    assert sealed.startswith(b"age-encryption.org/v1\n") and exported.out[:512] not in sealed
    opened = subprocess.run(
        ["age", "-d", "-i", str(key)], input=sealed, check=True, capture_output=True
    ).stdout
    assert opened == exported.out

    listed = services(gk)
    with tarfile.open(fileobj=io.BytesIO(exported.out)) as tar:
        member = max(
            (
                m
                for m in tar.getmembers()
                if m.name.startswith(f"backup/{db}/") and m.name.endswith(".zst")
            ),
            key=lambda m: m.size,
        )
    altered = bytearray(exported.out)
    altered[member.offset_data + member.size // 2] ^= 0xFF
    refusals = {
        exported.out[: len(exported.out) // 1024 * 512]: "the backup file is truncated",
        exported.out[: len(exported.out) // 2 + 100]: "the backup file is truncated",
        bytes(
            altered
        ): f"the backup file is damaged: invalid checksum '{member.name.split('/', 2)[2]}'",
        sealed: "the backup file is encrypted with age: decrypt it on the way in",
        b"not a backup": "it does not end as a tar file ends",
    }
    for bad, message in refusals.items():
        result = gk("--quiet", "pg:restore", "copy", "--from-file", "-", input=bad)
        assert result.code == 1 and message in result.stderr, result.stderr
        assert len(result.stderr.splitlines()) == 1, result.stderr
    assert services(gk) == listed

    gk.ok("pg:restore", "copy", "--from-file", "-", input=exported.out)
    assert ids(gk, "copy") == rows
    assert sql(gk, "copy", "select current_database()") == "copy"
    gk.ok("pg:destroy", "copy", "--force")


@RETENTION
def test_the_repository_is_encrypted_at_rest_with_a_passphrase_from_stdin(
    gk: Gokku, db: str
) -> None:
    backup_dir = gk.root / "services" / db / "backup"
    listed = kept(gk, db)
    for given, message in ((b"", "no passphrase on stdin"), (b"short\n", "too short")):
        refused = one_line_refusal(gk, "pg:backup-set-encryption", db, code=2, input=given)
        assert message in refused
    assert kept(gk, db) == listed

    passphrase = b"correct horse battery staple"
    gk.ok("pg:backup-set-encryption", db, input=passphrase + b"\n")
    assert [b["type"] for b in backups(gk, db)] == ["full"]  # a new repository
    gk.ok("pg:backup", db, "--type", "incr")
    manifests = list((backup_dir / "repo" / "backup" / db).glob("2*/backup.manifest"))
    assert len(manifests) == 2
    segments = archived_segments(gk, db)
    assert segments and all(f.read_bytes().startswith(b"Salted__") for f in manifests + segments)
    assert (backup_dir / "pgbackrest.conf").stat().st_mode & 0o077 == 0
    # The newest backup restores (and its WAL is read back) with the passphrase.
    gk.ok("pg:backup-verify", db)

    gk.ok("pg:backup-unset-encryption", db)
    manifests = list((backup_dir / "repo" / "backup" / db).glob("2*/backup.manifest"))
    assert [m.read_bytes()[:10] for m in manifests] == [b"[backrest]"]
    assert passphrase not in (backup_dir / "pgbackrest.conf").read_bytes()
    assert "are not encrypted" in one_line_refusal(gk, "pg:backup-unset-encryption", db, code=1)


@RETENTION
def test_doctor_reports_backups_too_old_and_a_scheduled_service_without_one(
    gk: Gokku, db: str
) -> None:
    gk.ok("pg:backup", db, "--type", "incr")
    # Neither backups nor schedules: no check runs for it (it would say: no backup at all).
    gk.ok("services:create", "postgres", "--name", "plain")
    gk.ok("services:create", "postgres", "--name", "planned")
    gk.ok("pg:backup-schedule", "planned", "0 3 * * *")

    def said() -> list[str]:
        return [line for line in gk("doctor").stdout.splitlines() if "'s backups: " in line]

    assert said() == [
        "service planned's backups: BACKUP CRITICAL - planned: no backup at all"
        " (take one: gokku postgres:backup planned)"
    ]
    gk.ok("pg:backup", "planned")
    assert said() == []

    # The service's own max age (backup-check's --max-age): its newest backup is older.
    gk.ok("services:config-set", db, "backup_max_age=1s")
    try:
        assert wait_until(lambda: said(), 30)
        assert said()[0].startswith(
            f"service {db}'s backups: BACKUP WARNING - {db}: newest backup "
        ) and said()[0].endswith("older than 1s; WAL archiving works")
    finally:
        gk.ok("services:config-set", db, "backup_max_age=26h")
    for name in ("plain", "planned"):
        gk.ok("pg:destroy", name, "--force")
