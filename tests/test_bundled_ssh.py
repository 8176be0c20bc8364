"""The bundled postgres plugin through both SSH doors (embedded server, sshd + forced
command): what users of Dokku and Gokku trip over, dumps mangled by ``ssh -t`` and imports
that read a terminal, must not happen here."""

import glob
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import pg_dump_without_creation_time, reachable_root
from conftest import Gokku
from s3standin import REGION, s3_standin
from sshkit import *  # noqa: F403 (the door fixtures)
from sshkit import Door, make_key

pytestmark = pytest.mark.skipif(
    not glob.glob("/usr/lib/postgresql/*/bin/initdb"), reason="PostgreSQL is not installed"
)


@pytest.fixture
def reachable() -> Iterator[Gokku]:
    with reachable_root() as gokku:
        yield gokku


# The door fixtures build on these two: point them at a root the postgres user can reach.
@pytest.fixture
def gokku(reachable: Gokku) -> Gokku:
    return reachable


@pytest.fixture
def base_env(reachable: Gokku) -> dict[str, str]:
    return reachable.env


def test_postgres_over_ssh(door: Door, gokku: Gokku) -> None:
    gokku.ok("plugins:add", "postgres")
    for name in ("db", "copy"):
        gokku.ok("services:create", "postgres", "--name", name)
    rows = b"create table t as select g as id, md5(g::text) as v from generate_series(1, 5000) g;"
    gokku.ok("pg:connect", "db", input=rows)
    local = gokku.ok("pg:export", "db").out

    # -tt asks for a pty even with stdin a pipe: export declares binary stdout, so the door
    # gives it none and the dump arrives as pg_dump wrote it.
    exported = door.ssh("pg:export db", "-tt")
    assert exported.code == 0, exported.stderr
    assert pg_dump_without_creation_time(exported.out) == pg_dump_without_creation_time(local)

    # -tt with nothing piped in: sshd's pty is refused as input; the embedded server gives
    # a data command no pty, and the plugin finds stdin empty.
    refused = door.ssh("pg:import copy", "-tt")
    said = b"pipe it in" if door.kind == "openssh" else b"nothing on stdin: pipe a dump in"
    assert refused.code == (2 if door.kind == "openssh" else 1)
    assert said in refused.out + refused.err

    imported = door.ssh("pg:import copy", input=exported.out)
    assert imported.code == 0, imported.stderr
    query = b"select count(*), md5(string_agg(v, ',' order by id)) from t;"
    answers = [door.ssh(f"pg:connect {name} -tA", input=query) for name in ("db", "copy")]
    assert answers[0].code == 0 and answers[0].out.startswith(b"5000|")
    assert answers[0].out == answers[1].out


def test_a_backup_key_may_export_and_nothing_more(door: Door, gokku: Gokku, keydir: Path) -> None:
    gokku.ok("plugins:add", "postgres")
    gokku.ok("services:create", "postgres", "--name", "db")
    backup = make_key(keydir, "backup")
    gokku.ok("ssh-keys:add", "backup", input=backup.public.encode())
    gokku.ok("access:grant", "backup", "service:db", "--read")
    exported = door.ssh("pg:export db", key=backup.path)
    assert exported.code == 0 and exported.out.startswith(b"PGDMP")
    assert door.ssh("pg:info db", key=backup.path).code == 0
    for command in ("pg:import db", "pg:connect db", "pg:stop db", "pg:destroy db --force"):
        refused = door.ssh(command, key=backup.path, input=exported.out)
        assert refused.code == 1, command
        assert refused.stderr.startswith(" !     backup may not"), refused.stderr
    assert gokku.ok("services:list", "--format", "json").stdout.count('"name": "db"') == 1


def test_a_read_key_exports_a_backup_over_ssh_that_restores_on_the_other_side(
    door: Door, gokku: Gokku, keydir: Path
) -> None:
    gokku.ok("plugins:add", "postgres")
    gokku.ok("services:create", "postgres", "--name", "db")
    gokku.ok("pg:connect", "db", input=b"create table t as select generate_series(1, 321) as id;")
    gokku.ok("pg:backup", "db")
    local = gokku.ok("pg:backup-export", "db").out
    reader = make_key(keydir, "reader")
    gokku.ok("ssh-keys:add", "reader", input=reader.public.encode())
    gokku.ok("access:grant", "reader", "service:db", "--read")
    # -tt: backup-export declares binary stdout, so no pty touches the tar.
    exported = door.ssh("pg:backup-export db", "-tt")
    assert exported.code == 0 and exported.out == local
    # A key that may only read the service exports it too.
    assert door.ssh("pg:backup-export db", key=reader.path).out == local
    for command in ("pg:backups db --format json", "pg:backup-check db"):
        assert door.ssh(command, key=reader.path).code == 0, command
    for command in ("pg:backup db", "pg:restore db --into x", "pg:clone db x"):
        refused = door.ssh(command, key=reader.path)
        assert refused.code == 1, command
        assert refused.stderr.startswith(" !     reader may not"), refused.stderr

    restored = door.ssh("pg:restore copy --from-file -", input=exported.out)
    assert restored.code == 0, restored.stderr
    assert door.ssh("pg:connect copy -tA", input=b"select count(*) from t;").out == b"321\n"


def test_backup_target_keys_come_on_stdin_unaudited_and_a_read_key_may_only_list(
    door: Door, gokku: Gokku, keydir: Path, tmp_path: Path
) -> None:
    """The bucket is served by moto, a local stand-in for S3 (no real cloud is reachable).
    Its certificate authority comes from the client's side, on stdin after the keys."""
    gokku.ok("plugins:add", "postgres")
    gokku.ok("services:create", "postgres", "--name", "db")
    reader = make_key(keydir, "reader")
    gokku.ok("ssh-keys:add", "reader", input=reader.public.encode())
    gokku.ok("access:grant", "reader", "service:db", "--read")
    with s3_standin(tmp_path) as s3:
        s3.client().create_bucket(Bucket="offsite")
        add = (
            f"pg:backup-target db add s3://offsite/db --endpoint {s3.endpoint}"
            f" --region {REGION} --ca-file -"
        )
        keys = f"{s3.key_id}\n{s3.secret}\n".encode() + s3.ca_file.read_bytes()
        refused = door.ssh(add, key=reader.path, input=keys)
        assert refused.code == 1 and refused.stderr == (
            " !     adding a backup target of db needs write access to it\n"
        )
        added = door.ssh(add, input=keys)
        assert added.code == 0, added.stderr
        assert any(k.startswith("db/backup/db/") for k in s3.keys("offsite"))

    listed = door.ssh("pg:backup-target db list", key=reader.path)
    assert listed.code == 0 and "s3://offsite/db" in listed.stdout
    assert s3.secret not in listed.stdout
    refused = door.ssh("pg:backup-target db remove offsite", key=reader.path)
    assert refused.code == 1 and "removing a backup target of db needs write access" in (
        refused.stderr
    )
    assert "s3://offsite/db" in gokku.ok("pg:backup-target", "db", "list").stdout
    audited = [e for e in door.audit() if e["argv"][:3] == ["pg:backup-target", "db", "add"]]
    assert len(audited) == 2 and s3.secret not in (door.root / "log" / "audit.log").read_text()
