"""The bundled postgres plugin, with real PostgreSQL servers (see bundled_support)."""

import contextlib
import glob
import gzip
import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import (
    children,
    human_bytes,
    listening,
    next_available_port,
    pg_dump_without_creation_time,
    reachable_root,
    read_env,
    run_in_pty,
    server_pid,
    sql,
    statuses,
    wait_gone,
)
from conftest import Gokku
from sshkit import processes_under, wait_until

PG_BIN = max(
    glob.glob("/usr/lib/postgresql/*/bin"), default="", key=lambda p: int(p.split("/")[-2])
)
pytestmark = pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries are not installed")

# 2600 rows of 4 KiB random bytes: a dump of about 12 MB (random bytes do not compress).
BIG_ROWS = """
create table blobs (id int primary key, body bytea not null);
insert into blobs
  select g, decode(string_agg(md5(random()::text || g || i), ''), 'hex')
  from generate_series(1, 2600) g, generate_series(1, 256) i group by g;
create table notes (id serial primary key, note text);
insert into notes (note) values ('it''s'), ('naïve'), (E'two\\nlines'), (null);
"""
DIGEST = """
select md5(string_agg(id || ':' || encode(body, 'hex'), ',' order by id)) from blobs
union all
select md5(string_agg(id || ':' || coalesce(note, '<null>'), ',' order by id)) from notes;
"""


@pytest.fixture(scope="module")
def gk() -> Iterator[Gokku]:
    with reachable_root("postgres") as gokku:
        yield gokku


@pytest.fixture(scope="module")
def db(gk: Gokku) -> str:
    """A running service with a small table, shared by the tests that do not change it."""
    gk.ok("services:create", "postgres", "--name", "db")
    gk.ok(
        "pg:connect",
        "db",
        input=b"create table t (id int primary key, v text);"
        b"insert into t select g, md5(g::text) from generate_series(1, 500) g;",
    )
    return "db"


def port_of(gk: Gokku, service: str) -> int:
    return int(gk.ok("services:config-get", service, "port").stdout)


def pg_dump_directly(env: dict[str, str]) -> bytes:
    """pg_dump -Fc run by hand with the variables a linked app gets."""
    pg_env = {
        "PGHOST": env["POSTGRES_HOST"],
        "PGPORT": env["POSTGRES_PORT"],
        "PGUSER": env["POSTGRES_USER"],
        "PGPASSWORD": env["POSTGRES_PASSWORD"],
        "PGDATABASE": env["POSTGRES_DB"],
        "PATH": os.environ["PATH"],
    }
    return subprocess.run(
        [f"{PG_BIN}/pg_dump", "-Fc"], env=pg_env, capture_output=True, check=True
    ).stdout


def test_round_trip_create_link_write_export_destroy_create_import(gk: Gokku) -> None:
    gk.ok("services:create", "postgres", "--name", "trip")
    gk.ok("apps:create", "api")
    gk.ok("services:link", "trip", "-a", "api")
    env = read_env(gk, "api")
    assert env["DATABASE_URL"] == (
        f"postgres://{env['POSTGRES_USER']}:{env['POSTGRES_PASSWORD']}"
        f"@{env['POSTGRES_HOST']}:{env['POSTGRES_PORT']}/{env['POSTGRES_DB']}"
    )
    # The variables really connect, with a client that is not Gokku's.
    who = subprocess.run(
        [f"{PG_BIN}/psql", env["DATABASE_URL"], "-tAc", "select current_database(), 6 * 7"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert who.stdout.strip() == "trip|42"

    gk.ok("pg:connect", "trip", input=BIG_ROWS.encode())
    digest = sql(gk, "trip", DIGEST)

    exported = gk.ok("postgres:export", "trip")
    dump = exported.out
    assert len(dump) >= 10 * 1024 * 1024
    assert dump.startswith(b"PGDMP")
    assert f"-----> trip: {human_bytes(len(dump))} in " in exported.stderr
    # Byte for byte what pg_dump writes, but for the start time pg_dump puts in the header.
    direct = pg_dump_directly(env)
    assert dump[:16] == direct[:16] and len(dump) == len(direct)
    assert (
        hashlib.sha256(pg_dump_without_creation_time(dump)).hexdigest()
        == hashlib.sha256(pg_dump_without_creation_time(direct)).hexdigest()
    )

    service_dir = gk.root / "services" / "trip"
    pid, port = server_pid(service_dir), int(env["POSTGRES_PORT"])
    assert pid and listening(port)
    processes = [pid, *children(pid)]
    assert len(processes) > 3  # the postmaster and its background workers
    gk.ok("postgres:destroy", "trip", "--force")
    assert all(wait_gone(p) for p in processes), "the server outlived its service"
    assert not listening(port)
    assert not service_dir.exists()
    assert "POSTGRES_PASSWORD" not in read_env(gk, "api")

    gk.ok("services:create", "postgres", "--name", "trip")
    imported = gk.ok("pg:import", "trip", input=dump)
    assert "Imported" in imported.stderr
    assert sql(gk, "trip", DIGEST) == digest
    assert sql(gk, "trip", "select note from notes order by id limit 2") == "it's\nnaïve"
    gk.ok("pg:destroy", "trip", "--force")


def test_export_is_byte_exact_when_stdout_is_a_terminal(gk: Gokku, db: str) -> None:
    through_pipe = gk.ok("pg:export", db).out
    through_tty = run_in_pty(gk, "pg:export", db, stdin_tty=True, stdout_tty=True)
    assert through_tty.code == 0, through_tty.stderr
    assert b"\n" in through_pipe  # which a terminal's line discipline would turn into \r\n
    assert pg_dump_without_creation_time(through_tty.out) == pg_dump_without_creation_time(
        through_pipe
    )
    assert re.search(rb"-----> db: \d+\.\d KiB in \d+\.\d s \(", through_tty.err)
    # 2>&1: progress written to stderr would land in the dump, so there is none.
    merged = subprocess.run(
        [sys.executable, "-m", "gokku", "pg:export", db],
        env=gk.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        check=True,
    )
    assert pg_dump_without_creation_time(merged.stdout) == pg_dump_without_creation_time(
        through_pipe
    )


# 768 rows of 4 KiB random bytes: 3 MiB that a custom-format dump cannot shrink.
FILLER = """
create table filler (id int primary key, body bytea not null);
insert into filler
  select g, decode(string_agg(md5(random()::text || g || i), ''), 'hex')
  from generate_series(1, 768) g, generate_series(1, 256) i group by g;
"""


def test_export_shows_its_progress_every_second_on_a_terminal(gk: Gokku, db: str) -> None:
    gk.ok("pg:connect", db, input=FILLER.encode())
    try:  # stderr on a terminal, the dump going to a disk that takes 1 MiB a second
        shown = run_in_pty(
            gk, "pg:export", db, stdin_tty=False, stdout_tty=False, stderr_tty=True,
            out_rate=1 << 20,
        )  # fmt: skip
        plain = gk.ok("pg:export", db)
        quiet = gk.ok("--quiet", "pg:export", db)
    finally:
        gk.ok("pg:connect", db, input=b"drop table filler;")
    assert shown.code == 0, shown.err
    assert pg_dump_without_creation_time(shown.out) == pg_dump_without_creation_time(plain.out)
    updates = re.findall(
        rb"\r-----> db: (\d+\.\d MiB), [\d.]+ [KM]iB/s, [\d.]+ s\x1b\[K", shown.err
    )
    assert len(updates) >= 2 and updates == sorted(updates), shown.err
    size = human_bytes(len(shown.out)).encode()
    assert len(shown.out) > 3 << 20 and size.endswith(b" MiB")
    assert re.search(
        rb"\r\x1b\[K-----> db: " + size + rb" in [\d.]+ s \([\d.]+ [KM]iB/s\)\n$", shown.err
    )
    # Without a terminal, only how it went; with --quiet, nothing.
    assert "\r" not in plain.stderr
    assert plain.stderr.splitlines()[-1].startswith(f"-----> db: {size.decode()} in ")
    assert quiet.err == b""


def test_import_with_a_terminal_on_stdin_is_refused(gk: Gokku, db: str) -> None:
    result = run_in_pty(gk, "pg:import", db, stdin_tty=True, stdout_tty=False)
    assert result.code == 2
    assert b"pipe it in" in result.err and b"< FILE" in result.err
    assert sql(gk, db, "select count(*) from t") == "500"


def test_connect_with_a_terminal_is_interactive_psql(gk: Gokku, db: str) -> None:
    # "=>": psql's prompt for a role that is no superuser (the apps' role).
    dialogue = ((rb"db=> ", b"select 6 * 7 as answer;\r"), (rb"\(1 row\).*db=> ", b"\\q\r"))
    result = run_in_pty(gk, "pg:connect", db, stdin_tty=True, stdout_tty=True, dialogue=dialogue)
    assert result.code == 0, result.err
    assert b" answer \r\n--------\r\n     42\r\n" in result.out


def test_connect_without_a_terminal_runs_the_sql_on_stdin(gk: Gokku, db: str) -> None:
    result = gk.ok("pg:connect", db, input=b"select 1 as one;")
    assert result.stdout.split() == ["one", "-----", "1", "(1", "row)"]
    failed = gk("pg:connect", db, input=b"select nope;\nselect 1;")
    assert failed.code != 0
    assert 'column "nope" does not exist' in failed.stderr
    assert "(1 row)" not in failed.stdout  # stopped at the first error


def test_info_and_dsn(gk: Gokku, db: str) -> None:
    info = gk.ok("pg:info", db).stdout
    port = port_of(gk, db)
    for expected in ("Status:       running", "PostgreSQL 15", f"Port:         {port}"):
        assert expected in info
    for field in ("Uptime:", "Size:", "Connections:  0", "DSN:          postgres://"):
        assert field in info
    dsn = gk.ok("postgres:info", db, "--dsn").stdout
    assert dsn.count("\n") == 1 and dsn.startswith("postgres://")
    count = subprocess.run(
        [f"{PG_BIN}/psql", dsn.strip(), "-tAc", "select count(*) from t"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert count.stdout.strip() == "500"
    assert gk.ok("services:info", db).stdout.startswith("=====> postgres service db")


def test_logs(gk: Gokku, db: str) -> None:
    assert "ready to accept connections" in gk.ok("pg:logs", db).stdout
    assert len(gk.ok("pg:logs", db, "-n", "1").stdout.splitlines()) == 1
    assert gk("pg:logs", db, "--bogus").code == 2


def test_logs_follow_until_interrupted(gk: Gokku, db: str) -> None:
    follow = subprocess.Popen(
        [sys.executable, "-m", "gokku", "pg:logs", db, "-f", "--tail", "0"],
        env=gk.env,
        stdout=subprocess.PIPE,
    )
    try:
        assert wait_until(lambda: _tail_follows(gk.root), 30)
        assert gk("pg:connect", db, "-c", "select following_marker").code == 1  # logged
        assert b"following_marker" in follow.stdout.readline()
    finally:
        follow.send_signal(signal.SIGINT)  # Ctrl-C; Gokku passes it to the script's group
        assert follow.wait(timeout=10) != 0


def _tail_follows(root: Path) -> bool:
    """A ``tail`` under ``root`` has the file it follows open: what is logged from now on
    shows in its output."""
    for pid in processes_under(root, b"tail"):
        # A process that has just ended has an empty command line (IndexError).
        with contextlib.suppress(OSError, IndexError):
            followed = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-2].decode()
            if followed in {os.readlink(fd) for fd in Path(f"/proc/{pid}/fd").iterdir()}:
                return True
    return False


def test_stop_start_restart_and_services_start_all(gk: Gokku, db: str) -> None:
    service_dir = gk.root / "services" / db
    first = server_pid(service_dir)
    gk.ok("pg:stop", db)
    assert wait_gone(first) and server_pid(service_dir) is None
    assert "Status:       stopped" in gk.ok("pg:info", db).stdout
    assert gk.ok("pg:status", db).stdout == "stopped\n"
    assert statuses(gk)[db] == "stopped"
    for command in ("export", "connect"):
        refused = gk(f"pg:{command}", db)
        assert refused.code == 1
        assert f"service '{db}' is stopped; start it with: gokku postgres:start {db}" in (
            refused.stderr
        )
    gk.ok("services:start", "--all")  # what the boot unit runs
    assert sql(gk, db, "select count(*) from t") == "500"
    assert gk.ok("pg:status", db).stdout == "running\n"
    assert statuses(gk)[db] == "running"
    second = server_pid(service_dir)
    gk.ok("pg:restart", db)
    assert wait_gone(second) and server_pid(service_dir) not in (None, second)
    assert sql(gk, db, "select count(*) from t") == "500"
    assert "already running" in gk.ok("pg:start", db).stderr


def test_a_service_that_does_not_exist(gk: Gokku) -> None:
    for command in ("info", "export", "connect", "start", "logs"):
        result = gk(f"pg:{command}", "nope")
        assert result.code == 1, command
        assert result.stderr == " !     service 'nope' does not exist (see: gokku services:list)\n"
    assert gk("pg:import", "nope", input=b"select 1;").code == 1


def test_a_corrupt_dump_changes_nothing(gk: Gokku, db: str) -> None:
    dump = bytearray(gk.ok("pg:export", db).out)
    gk.ok("pg:connect", db, input=b"insert into t values (1000, 'after the dump');")
    middle = len(dump) // 2
    dump[middle : middle + 64] = bytes(b ^ 0x5A for b in dump[middle : middle + 64])
    refusals = {
        bytes(dump): b"failed and was rolled back: the database is unchanged",
        b"PGDMP garbage": b"failed and was rolled back: the database is unchanged",
        b"select 1;\nselect nope;\n": b"failed and was rolled back: the database is unchanged",
        gzip.compress(b"drop table t;"): b"stdin is gzip-compressed; decompress it on the way in",
        b"\x01" + os.urandom(4096): b"neither a custom-format dump (pg_dump -Fc) nor SQL text",
    }
    for bad, message in refusals.items():
        result = gk("pg:import", db, input=bad)
        assert result.code == 1
        assert message in result.err
        assert sql(gk, db, "select count(*), max(v) from t where id = 1000") == "1|after the dump"
    assert sql(gk, db, "select count(*) from t") == "501"
    gk.ok("pg:connect", db, input=b"delete from t where id = 1000;")


def test_import_runs_a_plain_sql_file(gk: Gokku, db: str) -> None:
    script = b"create table from_sql (x int);\ninsert into from_sql values (1), (2);\n"
    gk.ok("pg:import", db, input=script)
    assert sql(gk, db, "select sum(x) from from_sql") == "3"
    empty = gk("pg:import", db)
    assert empty.code == 1 and "nothing on stdin" in empty.stderr
    gk.ok("pg:connect", db, input=b"drop table from_sql;")


def test_a_port_in_use_at_create_time_is_skipped(gk: Gokku) -> None:
    taken = next_available_port(gk)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        gk.ok("services:create", "postgres", "--name", "busy")
        port = port_of(gk, "busy")
        assert port != taken
        assert sql(gk, "busy", "show port") == str(port)
        with socket.create_connection(("127.0.0.1", taken)):
            pass  # the squatter still has its port
    gk.ok("pg:destroy", "busy", "--force")


@pytest.mark.skipif(os.geteuid() != 0, reason="the server runs as the caller when not root")
def test_a_root_the_server_user_cannot_reach_is_refused(gk: Gokku, tmp_path: Path) -> None:
    # pytest's own temp dirs are such a place: mode 0700, owned by root.
    private = Gokku(tmp_path / "root", {**gk.env, "GOKKU_ROOT": str(tmp_path / "root")})
    private.ok("plugins:add", "postgres")
    result = private("services:create", "postgres", "--name", "db")
    assert result.code == 1
    blocked = next(p for p in reversed(tmp_path.parents) if (p.stat().st_mode & 0o001) == 0)
    assert f"the server runs as user 'postgres', who cannot enter {blocked}" in result.stderr
    assert "chmod o+x" in result.stderr
    assert not (tmp_path / "root" / "services" / "db").exists()


def test_help_and_alias(gk: Gokku) -> None:
    assert gk.ok("postgres").stdout == gk.ok("pg:help").stdout
    assert "gokku postgres:export SERVICE > FILE.dump" in gk.ok("pg:help").stdout
    listed = gk.ok("plugins:list").stdout
    assert "postgres  pg" in listed and "1.0.0" in listed
