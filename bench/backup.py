"""What do a postgres service's pgBackRest backups cost, and what does a restore give back?

Creates a real service in a throwaway state root and fills it with SIZE MB of random
bytes (4 KiB rows with a small counter beside them; as in bench/export.py, the bytes do
not compress). Then, RUNS times, side by side:

- a full ``postgres:backup`` through Gokku, and the same pgBackRest backup run directly
  (the service's own configuration and stanza, as the server's user): target at or
  below 1.05x;
- ``pg_dump -Fc`` of the same database: the full backup at or below 0.2x of it;
- 1% of the rows changed (their counter, rows spread over the whole table), then an
  incremental ``postgres:backup --type incr``: at or below 0.1x of the full one.

Each time is the median of the runs, printed with its spread (fastest .. slowest) and
each run's ratios. Then the disasters, once:

- recovery point: a writer commits a row every 100 ms; the postmaster and its children
  are killed (SIGKILL) and the data directory is removed; ``postgres:restore --latest
  --force`` in place (the service's name typed on a terminal). Counts the commits lost
  (target: at most 60 s of them, the default archive_timeout) and the time from the loss
  to the service answering again;
- point in time: ``postgres:restore --time T --into NEW`` with T between two known
  commits gives exactly the rows committed before T.

pgBackRest 2.45 backs up incrementally by file: a table's 1 GB segment files are copied
whole when anything in them changed. The counter lives in the table's own pages and the
bytes in its TOAST table, so the 1% change touches the small table only; a change spread
over the bytes themselves copies every segment it touches.

Run as root (the server then runs as the postgres user) or as a user who may run
PostgreSQL: python bench/backup.py [--size MB] [--runs N] [--write-seconds S]
"""

import argparse
import fcntl
import json
import os
import pty
import shutil
import signal
import statistics
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pgroot import REPO, SERVICE, gokku, pg_bin, postgres_root, timed
from sshbench import report

PITR = "bench-pitr"
TICK = 0.1  # the writer's commit interval, seconds
RPO_TARGET = 60.0  # the default archive_timeout


def sql(dsn: str, query: str) -> str:
    """One query's result, unaligned, tuples only."""
    return subprocess.run(
        [pg_bin("psql"), "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", query],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def client_env(dsn: str) -> dict[str, str]:
    """libpq's variables for DSN, as the plugin's use_client sets them for pgBackRest."""
    url = urlsplit(dsn)
    return {
        "PGHOST": url.hostname or "127.0.0.1",
        "PGPORT": str(url.port),
        "PGUSER": unquote(url.username or ""),
        "PGPASSWORD": unquote(url.password or ""),
        "PGDATABASE": url.path.lstrip("/"),
        "PGCONNECT_TIMEOUT": "10",
    }


def wait_archived(dsn: str) -> None:
    """Wait until every WAL segment written so far is in the repository: a timed backup
    must not share the disk and cores with archiving the fill's backlog."""
    sql(dsn, "select txid_current()")
    segment = sql(dsn, "select pg_walfile_name(pg_current_wal_lsn())")
    sql(dsn, "select pg_switch_wal()")
    query = f"select coalesce(last_archived_wal, '') >= '{segment}' from pg_stat_archiver"
    while sql(dsn, query) != "t":
        time.sleep(0.5)


class Writer(threading.Thread):
    """Commits a row into ticks every TICK seconds through one psql session, until the
    server goes away; ``acked`` holds (id, monotonic time) of every commit psql answered."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.acked: list[tuple[int, float]] = []
        self.psql = subprocess.Popen(
            [pg_bin("psql"), "-X", "-A", "-t", "-q", "-d", dsn],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            bufsize=1,
        )

    def run(self) -> None:
        due = time.monotonic()
        try:
            while True:
                self.psql.stdin.write("insert into ticks default values returning id;\n")
                self.psql.stdin.flush()
                line = self.psql.stdout.readline()
                if not line.strip().isdigit():
                    return
                self.acked.append((int(line), time.monotonic()))
                due += TICK
                time.sleep(max(0.0, due - time.monotonic()))
        except OSError:
            return

    def stop(self) -> None:
        self.psql.kill()
        self.psql.wait()
        self.join()


def postmaster(data: Path) -> int:
    return int((data / "postmaster.pid").read_text().split()[0])


def kill_tree(pid: int) -> None:
    """SIGKILL the postmaster and its children, as a crash would, and wait until gone."""
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    victims = [pid, *map(int, kids.split())]
    for victim in victims:
        os.kill(victim, signal.SIGKILL)
    while any(Path(f"/proc/{v}").exists() and state(v) != "Z" for v in victims):
        time.sleep(0.05)


def state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "Z"


def in_terminal(env: dict[str, str], answer: str, *args: str) -> tuple[int, str]:
    """Run the CLI on a terminal (its controlling one) and type ANSWER at the prompt that
    ends with it in quotes, as an admin confirming an in-place restore does."""
    master, slave = pty.openpty()

    def take_terminal() -> None:
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "gokku", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env={**env, "TERM": "xterm"},
        cwd=REPO,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    shown, typed = b"", False
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # EIO: every end of the terminal closed
            break
        if not chunk:
            break
        shown += chunk
        if not typed and f'type "{answer}": '.encode() in shown:
            os.write(master, answer.encode() + b"\r")
            typed = True
    os.close(master)
    return proc.wait(), shown.decode(errors="replace")


def answering(dsn: str) -> None:
    while subprocess.run(
        [pg_bin("psql"), "-X", "-d", dsn, "-c", "select 1"], capture_output=True
    ).returncode:
        time.sleep(0.05)


def backups(env: dict[str, str], dsn: str, runs: int) -> dict:
    """The timed part: RUNS of full (Gokku and direct), pg_dump, 1% change, incremental."""
    conf = Path(env["GOKKU_ROOT"]) / "services" / SERVICE / "backup" / "pgbackrest.conf"
    owner = conf.stat().st_uid
    # As the plugin's as_server_user runs it.
    as_owner = (
        []
        if owner == os.getuid()
        else ["setpriv", f"--reuid={owner}", f"--regid={conf.stat().st_gid}", "--init-groups", "--"]
    )
    pgbackrest = shutil.which("pgbackrest") or "pgbackrest"
    through_gokku = [sys.executable, "-m", "gokku", "--quiet", "postgres:backup", SERVICE]
    directly = [*as_owner, pgbackrest, f"--config={conf}", f"--stanza={SERVICE}", "backup"]
    commands = {
        "gokku full": [*through_gokku, "--type", "full"],
        "direct full": [*directly, "--type=full"],
        "pg_dump": [pg_bin("pg_dump"), "--format=custom", f"--dbname={dsn}"],
        "gokku incr": [*through_gokku, "--type", "incr"],
        "direct incr": [*directly, "--type=incr"],
    }
    direct_env = {**env, **client_env(dsn)}
    dump = Path(env["GOKKU_ROOT"]).parent / "dump"
    times: dict[str, list[float]] = {name: [] for name in commands}
    for run in range(1, runs + 1):
        # Alternately first: the second of a pair finds the first one's WAL archived.
        ways = [("gokku", env), ("direct", direct_env)]
        for way, how in ways if run % 2 else reversed(ways):
            times[f"{way} full"].append(timed(commands[f"{way} full"], how))
        times["pg_dump"].append(timed(commands["pg_dump"], env, dump))
        for way, how in ways if run % 2 else reversed(ways):
            sql(dsn, "update blobs set version = version + 1 where id % 100 = 0")
            times[f"{way} incr"].append(timed(commands[f"{way} incr"], how))
        print(
            f"run {run}: "
            + ", ".join(f"{name} {values[-1]:.3f} s" for name, values in times.items())
            + f"; full gokku/direct {times['gokku full'][-1] / times['direct full'][-1]:.3f}x"
            + f", incr/full {times['gokku incr'][-1] / times['gokku full'][-1]:.3f}x",
            flush=True,
        )
    listing = gokku(env, "postgres:backups", SERVICE, "--format", "json", capture_output=True)
    stored = {
        kind: [b["size_bytes"] for b in json.loads(listing.stdout) if b["type"] == kind]
        for kind in ("full", "incr")
    }
    return {"seconds": times, "dump_bytes": dump.stat().st_size, "repository_bytes": stored}


def recovery_point(env: dict[str, str], dsn: str, write_seconds: float) -> dict:
    """Writer on, data directory destroyed, restore --latest in place: what was lost."""
    data = Path(env["GOKKU_ROOT"]) / "services" / SERVICE / "data"
    blobs = "select count(*), sum(version) from blobs"
    before = sql(dsn, blobs)
    writer = Writer(dsn)
    started = time.monotonic()
    writer.start()
    time.sleep(write_seconds)
    pid = postmaster(data)
    lost_at = time.monotonic()
    kill_tree(pid)
    shutil.rmtree(data)
    writer.stop()
    acked = writer.acked
    print(
        f"writer: {len(acked)} commits acknowledged; postmaster {pid} killed, data removed",
        flush=True,
    )
    code, shown = in_terminal(env, SERVICE, "postgres:restore", SERVICE, "--latest", "--force")
    if code:
        raise SystemExit(f"postgres:restore --latest --force failed ({code}):\n{shown}")
    answering(dsn)
    back = time.monotonic() - lost_at
    assert sql(dsn, blobs) == before, "the restored service lacks rows it had"
    restored = {int(i) for i in sql(dsn, "select id from ticks").split()}
    ids = [i for i, _ in acked]
    kept = [i for i in ids if i in restored]
    assert kept == ids[: len(kept)], "the restored commits are not a prefix of those made"
    lost = ids[len(kept) :]
    # The window lost: from the last commit restored (or the writer's start) to the loss.
    lost_seconds = lost_at - (acked[len(kept) - 1][1] if kept else started) if lost else 0.0
    return {
        "write_seconds": write_seconds,
        "acknowledged": len(ids),
        "restored": len(kept),
        "lost_commits": len(lost),
        "lost_seconds": lost_seconds,
        "loss_to_answering_seconds": back,
    }


def point_in_time(env: dict[str, str], dsn: str) -> dict:
    """Restore --time T --into NEW, T between two known commits: exactly the rows before."""
    before = int(sql(dsn, "insert into ticks default values returning id"))
    time.sleep(1)
    target = sql(
        dsn,
        "select to_char(clock_timestamp() at time zone 'UTC', 'YYYY-MM-DD HH24:MI:SS.US')",
    )
    time.sleep(1)
    after = int(sql(dsn, "insert into ticks default values returning id"))
    listing = "select string_agg(id::text, ',' order by id) from ticks"
    expected = sql(dsn, f"{listing} where id <= {before}")
    start = time.perf_counter()
    gokku(env, "--quiet", "postgres:restore", SERVICE, "--time", f"{target} UTC", "--into", PITR)
    seconds = time.perf_counter() - start
    new_dsn = gokku(env, "pg:info", PITR, "--dsn", capture_output=True, text=True).stdout.strip()
    got = sql(new_dsn, listing)
    ok = got == expected
    assert ok, f"restored to {target}: rows {got[-60:]!r}, expected {expected[-60:]!r}"
    return {
        "target": f"{target} UTC",
        "last_before": before,
        "first_after": after,
        "rows": expected.count(",") + 1,
        "exact": ok,
        "restore_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="MB of data (default 1024)")
    parser.add_argument(
        "--runs",
        type=int,
        default=5,
        help="runs of each backup (default 5: a backup's time varies by about a second)",
    )
    parser.add_argument(
        "--write-seconds",
        type=float,
        default=90,
        help="how long the writer commits before the loss (default 90)",
    )
    args = parser.parse_args()

    with postgres_root(PITR) as (top, env):
        # Two full backups kept: the runs' repository stays near twice the database.
        gokku(env, "--quiet", "postgres:backup-retention", SERVICE, "--full", "2")
        dsn = gokku(env, "pg:info", SERVICE, "--dsn", capture_output=True, text=True).stdout.strip()
        rows = args.size * 256  # 4 KiB each
        print(f"filling {SERVICE} with {args.size} MB of random bytes ...", flush=True)
        sql(
            dsn,
            "create table ticks (id bigserial primary key, at timestamptz not null"
            " default clock_timestamp());"
            "create table blobs (id int primary key, version int not null default 0, body bytea);"
            "insert into blobs (id, body) select g,"
            " decode(string_agg(md5(random()::text || g || i), ''), 'hex')"
            f" from generate_series(1, {rows}) g, generate_series(1, 256) i group by g;",
        )
        # Hint bits set and rows frozen now, so that reading the table later (pg_dump)
        # writes nothing an incremental backup would then copy.
        sql(dsn, "vacuum (freeze, analyze) blobs")
        sql(dsn, "checkpoint")
        database = int(sql(dsn, "select pg_database_size(current_database())"))
        print(f"database: {database / 1e6:.0f} MB; waiting for the WAL to be archived", flush=True)
        wait_archived(dsn)

        measured = backups(env, dsn, args.runs)
        times = measured["seconds"]
        medians = {name: statistics.median(values) for name, values in times.items()}
        ratios = {
            "gokku/direct": medians["gokku full"] / medians["direct full"],
            "full/pg_dump": medians["gokku full"] / medians["pg_dump"],
            "incr/full": medians["gokku incr"] / medians["gokku full"],
            "incr gokku/direct": medians["gokku incr"] / medians["direct incr"],
            "direct incr/full": medians["direct incr"] / medians["direct full"],
        }

        def each_run(top: str, bottom: str) -> list[float]:
            return [a / b for a, b in zip(times[top], times[bottom], strict=True)]

        per_run = {
            "full gokku/direct": each_run("gokku full", "direct full"),
            "incr/full": each_run("gokku incr", "gokku full"),
        }
        sizes = measured["repository_bytes"]
        stored = {kind: statistics.median(sizes[kind]) for kind in sizes}
        rpo = recovery_point(env, dsn, args.write_seconds)
        pitr = point_in_time(env, dsn)

        def verdict(value: float, target: float) -> str:
            return "ok" if value <= target else "MISSED"

        text = "\n".join(
            [
                f"database:              {database / 1e6:.0f} MB "
                f"(dump {measured['dump_bytes'] / 1e6:.0f} MB)",
                *(
                    f"median {name + ':':15}{medians[name]:8.3f} s"
                    f" (of {len(times[name])}: {min(times[name]):.3f} .. {max(times[name]):.3f} s)"
                    for name in times
                ),
                "per run full gokku/direct: "
                + ", ".join(f"{r:.3f}x" for r in per_run["full gokku/direct"]),
                "per run incr/full:         "
                + ", ".join(f"{r:.3f}x" for r in per_run["incr/full"]),
                f"full gokku/direct:     {ratios['gokku/direct']:.3f}x (target <= 1.05x) "
                + verdict(ratios["gokku/direct"], 1.05),
                f"full gokku/pg_dump:    {ratios['full/pg_dump']:.3f}x (target <= 0.2x) "
                + verdict(ratios["full/pg_dump"], 0.2),
                f"incr/full after 1%:    {ratios['incr/full']:.3f}x (target <= 0.1x) "
                + verdict(ratios["incr/full"], 0.1),
                f"  the same directly:   {ratios['direct incr/full']:.3f}x; incr gokku/direct"
                f" {ratios['incr gokku/direct']:.3f}x; stored: incr {stored['incr'] / 1e6:.2f} MB,"
                f" full {stored['full'] / 1e6:.0f} MB",
                f"recovery point:        {rpo['lost_commits']} of {rpo['acknowledged']} commits"
                f" lost (the last {rpo['lost_seconds']:.1f} s; target <= {RPO_TARGET:.0f} s) "
                + verdict(rpo["lost_seconds"], RPO_TARGET),
                f"loss to answering:     {rpo['loss_to_answering_seconds']:.1f} s"
                " (restore --latest in place)",
                f"point in time:         {pitr['rows']} rows up to id {pitr['last_before']},"
                f" none from {pitr['first_after']}: ok ({pitr['restore_seconds']:.1f} s,"
                " --into a new service)",
            ]
        )
        data = {
            "size_mb": args.size,
            "database_bytes": database,
            **measured,
            "medians": medians,
            "median_repository_bytes": stored,
            "ratios": ratios,
            "ratios_per_run": per_run,
            "recovery_point": rpo,
            "point_in_time": pitr,
        }
        report("backup", text, data)


if __name__ == "__main__":
    main()
