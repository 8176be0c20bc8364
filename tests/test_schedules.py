"""Backup schedules: cron lines in the real crontab of the state's owner, rendered from the
records in GOKKU_ROOT, run the way cron runs them (``sh -c`` in an emptied environment),
with real Redis and PostgreSQL servers (see bundled_support). Every test's root owns only
its own block of the crontab; the tests of other roots run beside it."""

import glob
import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path

import pytest
from bundled_support import kill_servers, reachable_root
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, make_key

from gokku import cron, schedules, services
from gokku.errors import UsageError
from gokku.paths import Root
from gokku.storage import write_json

pytestmark = pytest.mark.skipif(
    not (shutil.which("redis-server") and shutil.which("crontab")),
    reason="redis-server and cron are not installed",
)


def crontab() -> str:
    proc = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""


def block(gk: Gokku) -> list[str]:
    """This root's lines in the crontab (its markers left out); [] when it has none."""
    return cron.block_of(crontab(), str(gk.root.resolve())) or []


def line_for(gk: Gokku, service: str, ident: str) -> str:
    [line] = [x for x in block(gk) if f" services:schedule run {service} {ident} " in x]
    return line


def run_as_cron(line: str) -> subprocess.CompletedProcess:
    """The command of a crontab line, run as cron runs it: by sh, with cron's environment."""
    command = line.split(" ", 5)[5]
    env = {"HOME": os.environ.get("HOME", "/"), "LOGNAME": "root", "SHELL": "/bin/sh"}
    return subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)


def records(gk: Gokku, service: str) -> list[dict]:
    return json.loads(gk.ok("redis:backup-schedule-cat", service, "--format", "json").stdout)


def backup_count(gk: Gokku, service: str) -> int:
    return len(json.loads(gk.ok("redis:backups", service, "--format", "json").stdout))


def forget_services(gk: Gokku) -> None:
    """The root's services gone, their servers first (their pid files are in them), and
    with no records left its block out of the shared crontab."""
    kill_servers(gk.root)
    shutil.rmtree(gk.root / "services", ignore_errors=True)
    schedules.render(Root(gk.root))


@pytest.fixture(scope="module")
def gk() -> Iterator[Gokku]:
    with reachable_root("redis") as gokku:
        try:
            yield gokku
        finally:
            forget_services(gokku)


@pytest.fixture(scope="module")
def cache(gk: Gokku) -> str:
    gk.ok("services:create", "redis", "--name", "cache")
    gk.ok("redis:connect", "cache", "SET", "k", "v")
    return "cache"


@pytest.fixture(autouse=True)
def no_schedules_left(gk: Gokku) -> Iterator[None]:
    yield
    for path in gk.root.glob("services/*/schedules.json"):
        gk("services:schedule", "remove", path.parent.name)


def test_a_schedule_is_a_line_in_the_crontab_that_backs_up_and_records_the_run(
    gk: Gokku, cache: str
) -> None:
    before = backup_count(gk, cache)
    added = gk.ok("redis:backup-schedule", cache, "*/5 * * * *")
    assert "Scheduled cache 1: '*/5 * * * *' redis:backup cache" in added.stderr
    line = line_for(gk, cache, "1")
    assert line.startswith("*/5 * * * * ")
    assert line.endswith(" # redis:backup cache")
    assert f"GOKKU_ROOT={gk.root.resolve()} " in line

    ran = run_as_cron(line)
    assert ran.returncode == 0, ran.stderr
    assert backup_count(gk, cache) == before + 1
    [record] = records(gk, cache)
    last = record["last_run"]
    assert last["exit"] == 0 and last["start"] <= last["end"]
    log = (gk.root / "services" / cache / "schedule-1.log").read_text()
    assert "Backup " in log
    shown = gk.ok("redis:backup-schedule-cat", cache).stdout
    assert f"{last['start']} (exit 0)" in shown
    assert gk.ok("doctor").stdout == "ok: nothing to report\n"


def test_several_schedules_each_with_its_id_and_unschedule_one_or_all(
    gk: Gokku, cache: str
) -> None:
    gk.ok("redis:backup-schedule", cache, "0 3 * * *")
    gk.ok("redis:backup-schedule", cache, "@hourly")
    ids = [r["id"] for r in records(gk, cache)]
    assert len(ids) == 2 and len(set(ids)) == 2
    assert [x.split(" ", 5)[:5] for x in block(gk)] == [
        ["0", "3", "*", "*", "*"],
        ["0", "*", "*", "*", "*"],
    ]
    gk.ok("redis:backup-unschedule", cache, ids[0])
    assert [r["id"] for r in records(gk, cache)] == [ids[1]]
    assert len(block(gk)) == 1 and f" {cache} {ids[1]} " in block(gk)[0]
    missing = gk("redis:backup-unschedule", cache, "99")
    assert missing.code == 1 and "has no schedule 99" in missing.stderr
    gk.ok("redis:backup-unschedule", cache)
    assert records(gk, cache) == []
    assert block(gk) == []
    assert str(gk.root.resolve()) not in crontab()


def test_a_root_rewrites_its_own_block_and_no_other_line() -> None:
    """Other roots' blocks and the user's own lines stay as they are, where they are."""
    b = f"{cron.begin_marker('/b')}\n1 2 * * * b\n{cron.end_marker('/b')}\n"
    others = f"MAILTO=ops\n{b}5 * * * * mine\n"
    added = cron.with_block(others, "/a", ["0 3 * * * a"])
    assert added == others + f"{cron.begin_marker('/a')}\n0 3 * * * a\n{cron.end_marker('/a')}\n"
    changed = cron.with_block(added, "/a", ["0 4 * * * a", "0 5 * * * a"])
    assert changed.replace("0 4 * * * a\n0 5 * * * a", "0 3 * * * a") == added
    assert cron.with_block(changed, "/a", []) == others
    assert cron.block_of(changed, "/b") == ["1 2 * * * b"]


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("61 * * * *", "minute 61 is out of range 0-59"),
        ("* * *", "it needs 5 fields"),
        ("0 0 30 2 *", "it would never run"),
        ("*/0 * * * *", "step 0 is out of range"),
        ("5-1 * * * *", "range 5-1 runs backwards"),
        ("0 0 * foo *", "month 'foo' is not understood"),
        ("@reboot", "needs a period"),
        ("@sometimes", "unknown @sometimes"),
    ],
)
def test_a_bad_cron_expression_is_one_line_and_changes_nothing(
    gk: Gokku, cache: str, expression: str, reason: str
) -> None:
    gk.ok("redis:backup-schedule", cache, "0 3 * * *")
    before = (block(gk), gk.snapshot())
    result = gk("redis:backup-schedule", cache, expression)
    assert result.code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f" !     bad cron expression '{expression}': ")
    assert reason in result.stderr
    assert (block(gk), gk.snapshot()) == before


def test_an_unknown_service_is_refused(gk: Gokku, cache: str) -> None:
    gk.ok("redis:backup-schedule", cache, "0 3 * * *")
    before = block(gk)
    for command in ("backup-schedule", "backup-schedule-cat", "backup-unschedule"):
        result = gk(f"redis:{command}", "nosuch", "0 3 * * *")
        assert result.code == 1 and "service 'nosuch' does not exist" in result.stderr
    assert block(gk) == before


def test_destroy_takes_the_schedules_out_of_the_crontab(gk: Gokku) -> None:
    gk.ok("services:create", "redis", "--name", "doomed")
    gk.ok("redis:backup-schedule", "doomed", "0 3 * * *")
    gk.ok("redis:backup-schedule", "doomed", "0 4 * * *")
    assert len(block(gk)) == 2
    gk.ok("redis:destroy", "doomed", "--force")
    assert block(gk) == []


def test_a_destroy_cut_off_leaves_a_line_that_doctor_and_the_line_itself_clean_up(
    gk: Gokku,
) -> None:
    gk.ok("services:create", "redis", "--name", "cutoff")
    gk.ok("redis:backup-schedule", "cutoff", "0 3 * * *")
    line = line_for(gk, "cutoff", "1")
    gk.ok("redis:stop", "cutoff")
    # What a destroy killed right after its rename leaves: the records went with the
    # directory, the crontab still runs the line.
    root = Root(gk.root)
    services.remove_dir(root, services.load(root, "cutoff"))
    found = gk("doctor")
    assert found.code == 1
    assert "does not match the schedules recorded" in found.stdout
    assert "gokku doctor --fix" in found.stdout
    # The line, when cron runs it, runs nothing and takes itself out.
    ran = run_as_cron(line)
    assert ran.returncode == 1
    assert "has no schedule 1 (any longer): its cron line was removed" in ran.stderr
    assert block(gk) == []
    assert gk.ok("doctor", "--fix").code == 0  # the tombstone goes too
    assert gk.ok("doctor").stdout == "ok: nothing to report\n"


def test_the_next_schedule_change_drops_the_line_a_cut_off_destroy_left(
    gk: Gokku, cache: str
) -> None:
    gk.ok("services:create", "redis", "--name", "cutoff2")
    gk.ok("redis:backup-schedule", "cutoff2", "0 3 * * *")
    gk.ok("redis:stop", "cutoff2")
    root = Root(gk.root)
    services.remove_dir(root, services.load(root, "cutoff2"))
    assert any(" cutoff2 " in x for x in block(gk))
    gk.ok("redis:backup-schedule", cache, "0 4 * * *")
    assert [x.split(" # ")[1] for x in block(gk)] == [f"redis:backup {cache}"]
    gk.ok("doctor", "--fix")


def test_doctor_renders_a_block_that_was_edited_by_hand(gk: Gokku, cache: str) -> None:
    gk.ok("redis:backup-schedule", cache, "0 3 * * *")
    wanted = block(gk)
    root = str(gk.root.resolve())
    with cron.crontab_lock():
        cron.write_crontab(cron.with_block(crontab(), root, []))
    found = gk("doctor")
    assert found.code == 1 and "does not match the schedules recorded" in found.stdout
    fixed = gk("doctor", "--fix")
    assert "rendered this root's block again from the records" in fixed.stdout
    assert block(gk) == wanted


def test_doctor_reports_a_schedule_that_stopped_and_one_that_fails(gk: Gokku, cache: str) -> None:
    gk.ok("redis:backup-schedule", cache, "0 3 * * *")
    [stopping] = [r["id"] for r in records(gk, cache)]
    assert gk.ok("doctor").stdout == "ok: nothing to report\n"  # not due since it was made
    # Its last run two days ago, written as the run itself writes it: since then 03:00
    # has passed at least once without a run (cron stopped, dokku-postgres#341).
    path = gk.root / "services" / cache / schedules.RECORD
    data = json.loads(path.read_text())
    old = time.strftime(schedules.ISO, time.gmtime(time.time() - 2 * 86400))
    data["schedules"][0]["created_at"] = old
    data["schedules"][0]["last_run"] = {"start": old, "end": old, "exit": 0}
    write_json(path, data)
    found = gk("doctor")
    assert found.code == 1
    what = f"service cache's schedule {stopping} (redis:backup cache, '0 3 * * *')"
    assert f"{what} last ran {old}, but was due " in found.stdout
    assert "is cron running" in found.stdout

    # A run that fails (the server is stopped) is recorded and reported with its log.
    gk.ok("redis:backup-schedule", cache, "*/5 * * * *")
    failing = records(gk, cache)[-1]["id"]
    gk.ok("redis:stop", cache)
    try:
        ran = run_as_cron(line_for(gk, cache, failing))
    finally:
        gk.ok("redis:start", cache)
    assert ran.returncode == 1
    assert f"redis:backup cache exited 1: see services/cache/schedule-{failing}.log" in ran.stderr
    found = gk("doctor").stdout
    what = f"service cache's schedule {failing} (redis:backup cache, '*/5 * * * *')"
    assert f"{what} failed at " in found
    assert f"(exit 1): see services/cache/schedule-{failing}.log" in found
    assert "is stopped" in (gk.root / f"services/cache/schedule-{failing}.log").read_text()


@pytest.mark.skipif(
    not glob.glob("/usr/lib/postgresql/*/bin/initdb"), reason="PostgreSQL is not installed"
)
def test_postgres_schedules_bring_a_weekly_verify_with_the_first(gk: Gokku) -> None:
    gk.ok("plugins:add", "postgres")
    gk.ok("services:create", "postgres", "--name", "db")
    try:
        gk.ok("postgres:backup-schedule", "db", "0 3 * * *", "--type", "incr")
        shown = json.loads(gk.ok("pg:backup-schedule-cat", "db", "--format", "json").stdout)
        assert [(r["cron"], r["command"]) for r in shown] == [
            ("0 3 * * *", ["postgres:backup", "db", "--type", "incr"]),
            ("0 5 * * 0", ["postgres:backup-verify", "db"]),
        ]
        gk.ok("postgres:backup-schedule", "db", "0 12 * * *")
        shown = json.loads(gk.ok("pg:backup-schedule-cat", "db", "--format", "json").stdout)
        assert [r["command"][0] for r in shown].count("postgres:backup-verify") == 1
        assert len(block(gk)) == 3
        bad = gk("postgres:backup-schedule", "db", "0 3 * * *", "--type", "huge")
        assert bad.code == 2 and "unknown backup type 'huge'" in bad.stderr
        assert len(block(gk)) == 3
    finally:
        gk.ok("postgres:destroy", "db", "--force")
    assert block(gk) == []


def test_roots_scheduling_at_once_never_lose_each_others_lines(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    """Four roots of one user, a schedule on each of three services of each, all added at
    the same moment: every root's block ends with its three lines (the crontab is read and
    rewritten whole, under the user's lock)."""
    tree = write_plugin(tmp_path / "src" / "x")
    roots = [
        Gokku(tmp_path / f"r{i}", {**base_env, "GOKKU_ROOT": str(tmp_path / f"r{i}")})
        for i in range(4)
    ]
    for gk in roots:
        gk.ok("plugins:add", str(tree))
        for j in range(3):
            gk.ok("services:create", "x", "--name", f"s{j}")
    adds = [(gk, f"s{j}") for j in range(3) for gk in roots]
    try:
        with ThreadPoolExecutor(len(adds)) as pool:
            done = list(
                pool.map(
                    lambda job: job[0](
                        "services:schedule", "add", job[1], "0 3 * * *", "--", "x:info", job[1]
                    ),
                    adds,
                )
            )
        assert [r.code for r in done] == [0] * len(adds), [r.stderr for r in done]
        for gk in roots:
            assert sorted(x.split(" # ")[1] for x in block(gk)) == [
                f"x:info s{j}" for j in range(3)
            ]
    finally:
        for gk in roots:
            forget_services(gk)
            assert block(gk) == []


# ---- Who may change schedules: a member key through both doors -----------------------


class TestMembers:
    @pytest.fixture
    def reachable(self) -> Iterator[Gokku]:
        with reachable_root() as gokku:
            try:
                yield gokku
            finally:
                forget_services(gokku)

    @pytest.fixture
    def gokku(self, reachable: Gokku) -> Gokku:
        return reachable

    @pytest.fixture
    def base_env(self, reachable: Gokku) -> dict[str, str]:
        return reachable.env

    def test_a_key_that_may_only_read_sees_schedules_and_changes_none(
        self, door: Door, gokku: Gokku, keydir: Path
    ) -> None:
        gokku.ok("plugins:add", "redis")
        gokku.ok("services:create", "redis", "--name", "cache")
        reader = make_key(keydir, "reader")
        gokku.ok("ssh-keys:add", "reader", input=reader.public.encode())
        gokku.ok("access:grant", "reader", "service:cache", "--read")
        gokku.ok("redis:backup-schedule", "cache", "0 3 * * *")
        before = block(gokku)
        for command in (
            "redis:backup-schedule cache '0 4 * * *'",
            "redis:backup-unschedule cache",
            "redis:backup-unschedule cache 1",
            "services:schedule remove cache",
        ):
            refused = door.ssh(command, key=reader.path)
            assert refused.code != 0, command
            assert block(gokku) == before, command
        shown = door.ssh("redis:backup-schedule-cat cache", key=reader.path)
        assert shown.code == 0 and "0 3 * * *" in shown.stdout
        # Backups: a key that may read lists them, and takes none.
        assert door.ssh("redis:backup cache", key=reader.path).code != 0
        assert door.ssh("redis:backups cache --format json", key=reader.path).stdout == "[]\n"
        # A key that may write the service may schedule and back it up, but a restore
        # makes a new service: an admin's.
        gokku.ok("access:grant", "reader", "service:cache")
        assert door.ssh("redis:backup-schedule cache '0 4 * * *'", key=reader.path).code == 0
        assert len(block(gokku)) == 2
        label = door.ssh("redis:backup cache", key=reader.path).stdout.strip()
        refused = door.ssh(f"redis:restore cache --backup {label}", key=reader.path)
        assert refused.code != 0 and "admin" in refused.stderr
        listed = json.loads(gokku.ok("services:list", "--format", "json").stdout)
        assert [s["name"] for s in listed] == ["cache"]
        restored = door.ssh(f"redis:restore cache --backup {label} --into copy")  # alice: admin
        assert restored.code == 0, restored.stderr
        gokku.ok("redis:destroy", "copy", "--force")


# ---- The cron expressions themselves -----------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "at", "previous"),
    [
        ("0 3 * * *", "2026-12-02 02:59", "2026-12-01 03:00"),
        ("0 3 * * *", "2026-12-02 03:00", "2026-12-02 03:00"),
        ("*/15 * * * *", "2026-12-02 10:14", "2026-12-02 10:00"),
        ("@weekly", "2026-12-02 10:00", "2026-11-29 00:00"),
        ("0 5 * * 7", "2026-12-02 10:00", "2026-11-29 05:00"),
        ("30 1 * jan-mar mon,fri", "2026-12-02 10:00", "2026-03-30 01:30"),
        ("0 0 29 2 *", "2026-12-02 10:00", "2024-02-29 00:00"),
        # Both days restricted: either one will do (the 1st, or a Monday), as cron does.
        ("0 0 1 * mon", "2026-12-02 10:00", "2026-12-01 00:00"),
        ("0 0 13 * fri", "2026-11-29 10:00", "2026-11-27 00:00"),
    ],
)
def test_when_a_schedule_last_should_have_run(expression: str, at: str, previous: str) -> None:
    parsed = cron.parse(expression)
    stamp = "%Y-%m-%d %H:%M"
    assert parsed.previous(datetime.strptime(at, stamp)) == datetime.strptime(previous, stamp)


def test_names_ranges_steps_and_shorthands_parse_as_cron_reads_them() -> None:
    assert cron.parse("1-10/3 * * * *").minutes == {1, 4, 7, 10}
    assert cron.parse("0 0 * * sun,7").weekdays == {0}
    assert cron.parse("@daily").text == "0 0 * * *"
    with pytest.raises(UsageError, match="a step needs"):
        cron.parse("5/2 * * * *")
