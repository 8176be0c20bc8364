"""Off-site backup targets of the bundled postgres plugin: S3 buckets that pgBackRest keeps
as further repositories, getting every backup and the WAL as it is written.

No real cloud is reachable from the test machines: the bucket is served by moto's server,
a local stand-in for S3 that speaks its HTTP API, over HTTPS with a certificate the test
makes and the target trusts (see s3standin).
"""

import contextlib
import json
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import reachable_root, sql
from conftest import Gokku
from s3standin import REGION, S3, s3_standin
from sshkit import wait_until
from test_bundled_postgres import PG_BIN

pytestmark = pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries are not installed")

BUCKET = "offsite"

# The restores from a target take as long as the module's other tests together: two
# groups, each on a worker with its own bucket and service (module fixtures are made once
# per worker).
RESTORES = pytest.mark.xdist_group("test_backup_targets_postgres.restores")
REFUSALS = pytest.mark.xdist_group("test_backup_targets_postgres.refusals")


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3]:
    with s3_standin(tmp_path_factory.mktemp("s3")) as server:
        server.client().create_bucket(Bucket=BUCKET)
        yield server


@pytest.fixture(scope="module")
def gk() -> Iterator[Gokku]:
    with reachable_root("postgres") as gokku:
        gokku.ok("services:create", "postgres", "--name", "db")
        gokku.ok("pg:connect", "db", input=b"create table t (id serial primary key);")
        yield gokku


def keys_of(s3: S3, secret: str = "") -> bytes:
    return f"{s3.key_id}\n{secret or s3.secret}\n".encode()


def add_args(s3: S3, url: str, *extra: str, service: str = "db") -> list[str]:
    return [
        "pg:backup-target", service, "add", url,
        "--endpoint", s3.endpoint, "--region", REGION, "--ca-file", str(s3.ca_file), *extra,
    ]  # fmt: skip


def rows(gk: Gokku, service: str) -> list[int]:
    listed = sql(gk, service, "select coalesce(string_agg(id::text, ',' order by id), '') from t")
    return [int(i) for i in listed.split(",") if i]


def backups(gk: Gokku, service: str = "db") -> list[dict]:
    return json.loads(gk.ok("pg:backups", service, "--format", "json").stdout)


def repos(gk: Gokku, service: str) -> Counter:
    """How many backups of ``service`` each repository holds."""
    return Counter(b["repo"] for b in backups(gk, service))


@RESTORES
def test_a_target_gets_every_backup_and_the_wal_and_restores_when_the_local_one_is_lost(
    gk: Gokku, s3: S3
) -> None:
    sql(gk, "db", "insert into t default values")
    added = gk.ok(*add_args(s3, f"s3://{BUCKET}/hosts/one"), input=keys_of(s3))
    assert "Taking a first full backup of db to target offsite" in added.stderr
    assert [(b["repo"], b["type"]) for b in backups(gk)] == [("offsite", "full")]
    assert any(k.startswith("hosts/one/backup/db/") for k in s3.keys(BUCKET, "hosts/one/"))

    # Every backup goes to the local repository and to the target.
    gk.ok("pg:backup", "db", "--type", "incr")
    assert [(b["repo"], b["type"]) for b in backups(gk)] == [
        ("offsite", "full"),
        ("local", "full"),  # pgBackRest's first backup in a repository is a full one
        ("offsite", "incr"),
    ]
    text = gk.ok("pg:backups", "db").stdout
    assert all(f" {repo} " in text for repo in ("local", "offsite"))

    # The WAL goes there as it is written.
    switch = "select pg_walfile_name(pg_switch_wal()) from (select txid_current()) x"
    segment = sql(gk, "db", switch, "--superuser")
    assert wait_until(
        lambda: any(segment in k for k in s3.keys(BUCKET, "hosts/one/archive/db/")), 60
    )

    listed = gk.ok("pg:backup-target", "db", "list").stdout
    assert f"offsite              s3://{BUCKET}/hosts/one " in listed and s3.key_id in listed

    # From the target, by choice: its backups only.
    local = next(b["label"] for b in backups(gk) if b["repo"] == "local")
    args = ["pg:restore", "db", "--backup", local, "--from-target", "offsite", "--into", "x"]
    assert f"db has no backup {local}" in one_line_refusal(gk, args, 1)
    assert "x" not in gk.ok("services:list").stdout.split()
    sql(gk, "db", "insert into t default values")
    gk.ok("pg:restore", "db", "--from-target", "offsite", "--into", "fromtarget")
    assert rows(gk, "fromtarget") == rows(gk, "db")
    gk.ok("pg:destroy", "fromtarget", "--force")

    # The local repository is lost: the target has the backups and the WAL to restore.
    sql(gk, "db", "insert into t default values")
    kept = rows(gk, "db")
    gk.ok("pg:stop", "db")
    subprocess.run(["rm", "-rf", str(gk.root / "services" / "db" / "backup" / "repo")], check=True)
    gk.ok("pg:restore", "db", "--latest", "--into", "rescued")
    assert rows(gk, "rescued") == kept
    gk.ok("pg:destroy", "rescued", "--force")
    gk.ok("pg:start", "db")
    gk.ok("pg:backup", "db")


def one_line_refusal(gk: Gokku, args: list[str], code: int, input: bytes = b"") -> str:
    """Run a command that must be refused (progress lines off): that code, one line."""
    started = time.monotonic()
    result = gk("--quiet", *args, input=input)
    print(f"{time.monotonic() - started:.1f} s: {result.stderr.strip()}")
    assert result.code == code, (result.code, args, result.stderr)
    assert len(result.stderr.splitlines()) == 1, result.stderr
    return result.stderr


def without(args: list[str], *dropped: str) -> list[str]:
    return [a for a in args if a not in dropped]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def state(gk: Gokku) -> tuple[str, bytes, list[str], list[str], list[dict]]:
    service = gk.root / "services" / "db"
    targets = service / "backup-targets"
    return (
        gk.ok("pg:backup-target", "db", "list").stdout,
        (service / "backup" / "pgbackrest.conf").read_bytes(),
        sorted(p.name for p in targets.iterdir()) if targets.exists() else [],
        sorted(p.name for p in (service / "backup").glob("target-*.pem")),
        backups(gk),
    )


@REFUSALS
def test_bad_targets_are_one_line_and_change_nothing(gk: Gokku, s3: S3) -> None:
    gk.ok(*add_args(s3, f"s3://{BUCKET}/hosts/two", "--name", "two"), input=keys_of(s3))
    before = state(gk)
    good = f"s3://{BUCKET}/hosts/three"
    usage = {
        "is not an s3://BUCKET/PATH URL": add_args(s3, "https://offsite/x"),
        "is not an s3://BUCKET/PATH URL ": add_args(s3, "s3://Off_Site/x"),
        "give the bucket's region": without(add_args(s3, good), "--region", REGION),
        "give the S3 endpoint": add_args(s3, good)[:4],
        "over HTTPS only": [a.replace("https:", "http:") for a in add_args(s3, good)],
        "is not a PEM certificate file": add_args(s3, good)[:-1] + ["/etc/passwd"],
        "unknown action 'rename'": ["pg:backup-target", "db", "rename", "two"],
    }
    for message, args in usage.items():
        assert message.strip() in one_line_refusal(gk, args, 2, keys_of(s3)), args
    assert "give the access key ID and the secret key" in one_line_refusal(
        gk, add_args(s3, good), 2, b""
    )
    # --ca-file -: the PEM follows the keys on stdin; none, or bytes that are not one.
    # A name of its own: the module's first test may have left a target named offsite.
    from_stdin = add_args(s3, good, "--name", "from-stdin")
    from_stdin[from_stdin.index(str(s3.ca_file))] = "-"
    pem = s3.ca_file.read_bytes()
    for tail in (b"", b"\0not a certificate\n" * 6000, pem[:200]):
        assert "--ca-file -: no PEM certificate on stdin after the two keys" in (
            one_line_refusal(gk, from_stdin, 2, keys_of(s3) + tail)
        )
    bundle = pem * (2**20 // len(pem) + 1)
    assert "--ca-file -: more than 1 MiB on stdin after the two keys" in (
        one_line_refusal(gk, from_stdin, 2, keys_of(s3) + bundle)
    )
    closed = f"https://localhost:{free_port()}"
    faults = {
        "adding target three failed: unable to connect": [
            a.replace(s3.endpoint, closed) for a in add_args(s3, good, "--name", "three")
        ],
        "adding target three failed: HTTP request failed with 403": add_args(
            s3, good, "--name", "three"
        ),
        "is target 'two' of db already": add_args(s3, f"s3://{BUCKET}/hosts/two/"),
        "has a target named 'two' already": add_args(s3, good, "--name", "two"),
    }
    for message, args in faults.items():
        secret = "wrong" if "403" in message else ""
        assert message in one_line_refusal(gk, args, 1, keys_of(s3, secret)), args
    assert "db has no backup target 'nope'" in one_line_refusal(
        gk, ["pg:backup-target", "db", "remove", "nope"], 1
    )
    assert state(gk) == before

    gk.ok("pg:backup-target", "db", "remove", f"s3://{BUCKET}/hosts/two")
    assert "two " not in gk.ok("pg:backup-target", "db", "list").stdout


def command_lines() -> set[bytes]:
    """Every process's argv on this host, as far as /proc shows it."""
    seen = set()
    for entry in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            seen.add(entry.read_bytes())
    return seen


@REFUSALS
def test_the_secret_key_is_never_shown_nor_in_argv(gk: Gokku, s3: S3) -> None:
    secret = s3.secret.encode()
    seen: set[bytes] = set()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.update(command_lines())

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        gk.ok(*add_args(s3, f"s3://{BUCKET}/hosts/four", "--name", "four"), input=keys_of(s3))
        gk.ok("pg:backup", "db", "--type", "diff")
    finally:
        done.set()
        watcher.join()
    assert any(b"pgbackrest" in line and b"backup" in line for line in seen), "nothing watched"
    assert not [line for line in seen if secret in line]

    assert secret not in gk.ok("pg:backup-target", "db", "list").out
    assert secret not in gk("doctor").out
    # (The audit log, written for commands that come over SSH: test_bundled_ssh.)
    # Kept only where the service's owner and its server's user can read it.
    service = gk.root / "services" / "db"
    for kept in (service / "backup-targets" / "four.env", service / "backup" / "pgbackrest.conf"):
        assert secret in kept.read_bytes() and kept.stat().st_mode & 0o077 == 0
    assert (service / "backup-targets").stat().st_mode & 0o077 == 0
    for path in service.rglob("*"):
        if path.is_file() and path.stat().st_mode & 0o004:
            assert secret not in path.read_bytes(), path
    gk.ok("pg:backup-target", "db", "remove", "four")
    assert b"hosts/four" not in (service / "backup" / "pgbackrest.conf").read_bytes()
    assert not (service / "backup-targets" / "four.env").exists()


def archived(gk: Gokku, segment: str) -> bool:
    """The service's archiver has archived SEGMENT (or a later one)."""
    last = sql(gk, "db", "select coalesce(last_archived_wal, '') from pg_stat_archiver")
    return last >= segment


@REFUSALS
def test_a_change_of_the_local_encryption_names_the_targets_that_keep_theirs(
    gk: Gokku, s3: S3
) -> None:
    """pgBackRest cannot change a repository's cipher: a target goes on as it was added,
    and setting or unsetting the local encryption says so of each such target, in one
    line with what to do; the targets still take the next backup."""

    def keeps(name: str, how: str) -> str:
        return (
            f"Target {name} (s3://{BUCKET}/hosts/enc-{name}) keeps its copies {how}: "
            "to change that, remove it and add a target at another path"
        )

    def add(name: str) -> None:
        url = f"s3://{BUCKET}/hosts/enc-{name}"
        gk.ok(*add_args(s3, url, "--name", name, service="enc"), input=keys_of(s3))

    gk.ok("services:create", "postgres", "--name", "enc")
    try:
        add("plain")
        first = gk.ok("pg:backup-set-encryption", "enc", input=b"the first passphrase\n")
        assert keeps("plain", "unencrypted") in first.stderr
        add("sealed")
        second = gk.ok("pg:backup-set-encryption", "enc", input=b"the second passphrase\n")
        assert keeps("plain", "unencrypted") in second.stderr
        other = "encrypted with the passphrase it was added with, not this one"
        assert keeps("sealed", other) in second.stderr
        unset = gk.ok("pg:backup-unset-encryption", "enc")
        assert "Target plain" not in unset.stderr  # unencrypted, as the local one now
        kept = "encrypted, with the passphrase it was added with (kept for it)"
        assert keeps("sealed", kept) in unset.stderr

        before = repos(gk, "enc")
        gk.ok("pg:backup", "enc")
        assert repos(gk, "enc") - before == Counter(local=1, plain=1, sealed=1)
    finally:
        gk.ok("pg:destroy", "enc", "--force")


def test_a_target_that_is_down_stops_neither_archiving_nor_local_backups(gk: Gokku, s3: S3) -> None:
    gk("pg:backup-target", "db", "remove", "offsite")  # left by the first test, if it ran
    gk.ok(*add_args(s3, f"s3://{BUCKET}/hosts/five", "--name", "five"), input=keys_of(s3))
    switch = "select pg_walfile_name(pg_switch_wal()) from (select txid_current()) x"
    archive = "hosts/five/archive/db/"
    with s3.down():
        sql(gk, "db", "insert into t default values")
        lost = sql(gk, "db", switch, "--superuser")
        # The service goes on archiving into its own repository.
        assert wait_until(lambda: archived(gk, lost), 30)
        started = time.monotonic()
        backup = gk("pg:backup", "db", "--type", "incr")
        took = time.monotonic() - started
        print(f"backup with the target down: {took:.1f} s\n{backup.stderr}")
        assert backup.code == 0, backup.stderr
        assert took < 30
        warnings = [line for line in backup.stderr.splitlines() if line.startswith(" !")]
        assert len(warnings) == 1 and "target five lacks" in warnings[0], warnings
        assert backups(gk)[-1]["repo"] == "local"
        check = gk("pg:backup-check", "db")
        assert check.code == 1 and "target five lacks" in check.stdout, check.stdout
        # Stopped, the service archives its last segment: the target cannot have it.
        gk.ok("pg:stop", "db")
    # Back, but behind: a restore from it says what it lacks.
    restored = gk("pg:restore", "db", "--from-target", "five", "--into", "lagging")
    assert restored.code == 0, restored.stderr
    warned = [line for line in restored.stderr.splitlines() if line.startswith(" !")]
    assert len(warned) == 1 and "warning: target five lacks" in warned[0], warned
    gk.ok("pg:destroy", "lagging", "--force")
    # The next segment archived brings the target up to date.
    gk.ok("pg:start", "db")
    newest = sql(gk, "db", switch, "--superuser")
    assert wait_until(lambda: any(newest in k for k in s3.keys(BUCKET, archive)), 60)
    assert any(lost in k for k in s3.keys(BUCKET, archive))
    assert gk("pg:backup-check", "db").code == 0
