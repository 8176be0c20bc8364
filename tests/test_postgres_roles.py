"""Linked apps get a PostgreSQL role of their own, never the superuser: the server runs as
Gokku's account, where a superuser's ``COPY ... TO PROGRAM`` runs any program. With real
servers (see bundled_support); services made before app roles are moved onto one by
``pg:app-role``, which a kill -9 halfway through leaves working and finishable."""

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import reachable_root, read_env, sql
from conftest import Gokku
from sshkit import kill_with_its_script, wait_until
from test_bundled_postgres import PG_BIN

pytestmark = pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries are not installed")

# What an app of the old days made through its superuser DATABASE_URL: every kind of
# object the move hands over to the apps' role, and a role named app with the rights the
# move must take away.
OBJECTS = """
create role app login superuser;
grant pg_execute_server_program to app;
create schema reports;
create type mood as enum ('ok', 'sad');
create table notes (id serial primary key, note text, feeling mood default 'ok');
create table reports.daily (id int generated always as identity, day date);
create view note_count as select count(*) from notes;
create function shout(t text) returns text language sql as $$ select upper(t) $$;
insert into notes (note) values ('first');
select lo_from_bytea(4242, 'large');
"""
# What the app does with them afterwards, as that role.
USES = (
    "insert into notes (note, feeling) values ('second', 'sad');"
    "insert into reports.daily (day) values ('2026-12-04');"
    "alter table notes add column extra int;"
    "select (select count from note_count), shout('hi'), encode(lo_get(4242), 'escape');"
)


@pytest.fixture
def gk() -> Iterator[Gokku]:
    with reachable_root("postgres") as gokku:
        gokku.ok("apps:create", "api")
        yield gokku


def psql(url: str, query: str) -> subprocess.CompletedProcess:
    """The client an app would use, with the URL its .env holds (not Gokku's)."""
    return subprocess.run(
        [f"{PG_BIN}/psql", url, "-XqAt", "-v", "ON_ERROR_STOP=1", "-c", query],
        capture_output=True,
        text=True,
        timeout=60,
    )


def start_app_role(gk: Gokku) -> subprocess.Popen:
    """``pg:app-role db`` in a session of its own, to be killed halfway."""
    return subprocess.Popen(
        [sys.executable, "-m", "gokku", "pg:app-role", "db"],
        env=gk.env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def settings(gk: Gokku, service: str) -> dict[str, str]:
    path = gk.root / "services" / service / "settings.env"
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def refuses_programs(url: str, tmp_path: Path) -> None:
    """The role behind URL cannot run a program, read a server file or make itself more."""
    marker = tmp_path / "pwned"
    attempts = {
        f"copy (select 1) to program 'touch {marker}'": "must be superuser",
        "select pg_read_file('/etc/hostname')": "permission denied",
        "alter role current_user superuser": "must be superuser",
        "grant pg_execute_server_program to current_user": "must have admin option",
        "alter system set archive_command = 'true'": "permission denied",
    }
    for query, error in attempts.items():
        tried = psql(url, query)
        assert tried.returncode != 0 and error in tried.stderr, (query, tried.stderr)
    assert not marker.exists()
    assert psql(url, "select rolsuper from pg_roles where rolname = current_user").stdout == "f\n"


def test_a_linked_app_owns_its_database_and_cannot_run_programs(gk: Gokku, tmp_path: Path) -> None:
    gk.ok("services:create", "postgres", "--name", "db")
    gk.ok("services:link", "db", "-a", "api")
    env = read_env(gk, "api")
    assert env["POSTGRES_USER"] == "app"
    assert env["DATABASE_URL"].startswith(f"postgres://app:{env['POSTGRES_PASSWORD']}@")
    refuses_programs(env["DATABASE_URL"], tmp_path)
    # It owns the database: it makes its tables, and so do pg:connect and pg:import,
    # whose objects are then the app's as well.
    url = env["DATABASE_URL"]
    assert psql(url, "create table mine (id int)").returncode == 0
    gk.ok("pg:connect", "db", input=b"create table by_connect (id int);")
    gk.ok("pg:import", "db", input=b"create table by_import (id int);")
    owners = psql(
        url, "select string_agg(tableowner, ',') from pg_tables where schemaname = 'public'"
    )
    assert owners.stdout == "app,app,app\n"
    assert (
        psql(url, "insert into by_connect values (1); insert into by_import values (2)").returncode
        == 0
    )
    # Gokku's own superuser stays Gokku's: pg:connect as it for admins only (the local
    # CLI is an admin's), and its password is in no app's variables.
    assert sql(gk, "db", "show is_superuser", "--superuser") == "on"
    assert sql(gk, "db", "show is_superuser") == "off"
    assert settings(gk, "db")["SUPERUSER_PASSWORD"] not in json.dumps(env)
    info = gk.ok("pg:info", "db").stdout
    assert "Apps' role:   app (owns the database; no superuser)\n" in info

    # A dump that needs the superuser (an extension only it may create) fails as a whole
    # as the apps' role; an admin imports it with --superuser, and the app owns the rest.
    needs = b"create extension pg_stat_statements; create table after_ext (id int);"
    refused = gk("pg:import", "db", input=needs)
    assert refused.code == 1 and "permission denied to create extension" in refused.stderr
    assert "rolled back: the database is unchanged" in refused.stderr
    assert (
        psql(url, "select count(*) from pg_extension where extname = 'pg_stat_statements'").stdout
        == "0\n"
    )
    gk.ok("pg:import", "db", "--superuser", input=needs)
    assert psql(url, "insert into after_ext values (1)").returncode == 0
    wrong = gk("pg:import", "db", "--superuserx", input=needs)
    assert (wrong.code, wrong.stderr) == (
        2,
        " !     usage: gokku postgres:import SERVICE [--superuser] < FILE\n",
    )


def make_it_old(gk: Gokku, service: str) -> str:
    """Turn a fresh service into one as Gokku made them before app roles (its superuser
    the role in settings, record and links; no role app), and return its DATABASE_URL."""
    saved = settings(gk, service)
    superuser = (
        f"postgres://postgres:{saved['SUPERUSER_PASSWORD']}@127.0.0.1:{saved['PORT']}/{service}"
    )
    dropped = psql(
        superuser, "alter database db owner to postgres; drop owned by app; drop role app"
    )
    assert dropped.returncode == 0, dropped.stderr
    old = {**saved, "DB_USER": "postgres", "PASSWORD": saved["SUPERUSER_PASSWORD"]}
    del old["SUPERUSER"], old["SUPERUSER_PASSWORD"]
    path = gk.root / "services" / service / "settings.env"
    path.write_text("".join(f"{k}={v}\n" for k, v in old.items()))
    password = old["PASSWORD"]
    gk.ok("services:config-set", service, "user=postgres", f"password={password}")
    gk.ok(
        "services:env-set",
        service,
        f"DATABASE_URL={superuser}",
        "POSTGRES_USER=postgres",
        f"POSTGRES_PASSWORD={password}",
    )
    return superuser


def test_app_role_moves_an_old_service_and_a_kill_halfway_leaves_it_working(
    gk: Gokku, tmp_path: Path
) -> None:
    gk.ok("services:create", "postgres", "--name", "db")
    old_url = make_it_old(gk, "db")
    gk.ok("services:link", "db", "-a", "api")
    assert read_env(gk, "api")["DATABASE_URL"] == old_url
    made = psql(old_url, OBJECTS)
    assert made.returncode == 0, made.stderr
    assert "SUPERUSER: its SQL runs programs" in gk.ok("pg:info", "db").stdout
    backed_up = gk.ok("pg:backup", "db")  # as old: its superuser owns everything
    assert backed_up.code == 0

    # Killed while its SQL waits for a table the superuser holds: the transaction goes
    # with the connection, the app still connects as before, and nothing is half-moved.
    holder = subprocess.Popen([f"{PG_BIN}/psql", old_url, "-Xq"], stdin=subprocess.PIPE, text=True)
    holder.stdin.write("begin; lock table notes in access exclusive mode; select 1;\n")
    holder.stdin.flush()
    held = "select count(*) from pg_locks where relation = 'notes'::regclass and granted"
    waiting = "select count(*) from pg_locks where not granted"
    assert wait_until(lambda: psql(old_url, held).stdout == "1\n", 30)
    mover = start_app_role(gk)
    assert wait_until(lambda: psql(old_url, waiting).stdout == "1\n", 60)
    kill_with_its_script(mover)
    holder.stdin.write("commit;\n")
    holder.stdin.close()
    assert holder.wait(timeout=60) == 0
    assert wait_until(lambda: psql(old_url, waiting).stdout == "0\n", 60)
    assert psql(old_url, "select rolsuper from pg_roles where rolname = 'app'").stdout == "t\n"
    assert psql(old_url, "select note from notes").stdout == "first\n"
    assert read_env(gk, "api")["DATABASE_URL"] == old_url

    # Run again, it finishes: the app's variables name the new role, which owns what the
    # superuser made and may use all of it; the superuser's old password is dead.
    moved = gk.ok("pg:app-role", "db")
    assert "connect as role app now" in moved.stderr
    assert "Redeploy api: their variables are new" in moved.stderr
    env = read_env(gk, "api")
    assert env["POSTGRES_USER"] == "app" and env["DATABASE_URL"] != old_url
    used = psql(env["DATABASE_URL"], USES)
    assert used.returncode == 0, used.stderr
    assert used.stdout == "2|HI|large\n"
    refuses_programs(env["DATABASE_URL"], tmp_path)
    assert "password authentication failed" in psql(old_url, "select 1").stderr
    assert "LEGACY_PASSWORD=''" in (gk.root / "services" / "db" / "settings.env").read_text()
    assert "Apps' role:   app (owns the database; no superuser)" in gk.ok("pg:info", "db").stdout
    extra = gk("pg:app-role", "db", "extra")
    assert (extra.code, extra.stderr) == (2, " !     usage: gokku postgres:app-role SERVICE\n")
    again = gk.ok("pg:app-role", "db")
    assert "connect as role app already" in again.stderr
    assert read_env(gk, "api") == env

    # A backup taken before the move restores into a service whose apps' role owns it.
    label = json.loads(gk.ok("pg:backups", "db", "--format", "json").stdout)[0]["label"]
    gk.ok("pg:restore", "db", "--backup", label, "--into", "copy")
    gk.ok("apps:create", "web")
    gk.ok("services:link", "copy", "-a", "web")
    copy_url = read_env(gk, "web")["DATABASE_URL"]
    assert re.match(r"postgres://app:\w+@127\.0\.0\.1:\d+/copy$", copy_url)
    restored = psql(copy_url, USES)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == "2|HI|large\n"  # the backup's first note, then USES's
    refuses_programs(copy_url, tmp_path)


@pytest.mark.parametrize("held", ["service-db", "app-api"])
def test_app_role_killed_after_its_sql_committed_is_finished_by_a_second_run(
    gk: Gokku, held: str
) -> None:
    """Killed between the SQL's commit (the superuser's password is new) and the apps'
    new variables: held on the service's lock (before its record changes) or on the app's
    (after it, before the app's .env is written). The app's old variables no longer work
    until the command runs again, which connects with the new password and finishes."""
    gk.ok("services:create", "postgres", "--name", "db")
    old_url = make_it_old(gk, "db")
    gk.ok("services:link", "db", "-a", "api")
    # flock(1) takes the same lock as Gokku's commands (flock(2) on the lock's file).
    holder = subprocess.Popen(
        ["flock", str(gk.root / "locks" / f"{held}.lock"), "-c", "echo held; exec cat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    mover = None
    try:
        assert holder.stdout.readline() == b"held\n"
        mover = start_app_role(gk)

        def committed() -> bool:
            return "password authentication failed" in psql(old_url, "select 1").stderr

        assert wait_until(committed, 60)
        assert mover.poll() is None  # it waits for the lock
    finally:
        if mover is not None:
            kill_with_its_script(mover)
        holder.stdin.close()
        holder.wait(timeout=30)
    assert read_env(gk, "api")["DATABASE_URL"] == old_url  # cut off: the app's are dead

    moved = gk.ok("pg:app-role", "db")
    assert "connect as role app now" in moved.stderr
    env = read_env(gk, "api")
    assert env["POSTGRES_USER"] == "app" and env["DATABASE_URL"] != old_url
    assert psql(env["DATABASE_URL"], "select current_user").stdout == "app\n"
    assert sql(gk, "db", "show is_superuser", "--superuser") == "on"
    assert settings(gk, "db")["LEGACY_PASSWORD"] == "''"


def test_app_role_bad_input_changes_nothing(gk: Gokku) -> None:
    before = gk.snapshot()
    for args, error in (
        ((), "missing service name"),
        (("nosuch",), "service 'nosuch' does not exist"),
    ):
        result = gk("pg:app-role", *args)
        assert result.code != 0 and error in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1
    assert gk.snapshot() == before
