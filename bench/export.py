"""How much slower is ``gokku postgres:export`` than running pg_dump yourself?

Creates a real service in a throwaway state root, fills it with SIZE MB of random bytes
(they do not compress, so the dump is about as big), then times, alternately, RUNS exports
through Gokku and RUNS ``pg_dump -Fc`` run directly against the same database, both
writing to a file. Prints every run, the medians and their ratio (target: at or below
1.02x on a 1 GB database, ``--size 1024``).

Gokku's cost is mostly fixed (starting Python, routing, bash, the helpers) plus one extra
copy of the bytes (the byte counter), so the ratio shrinks as the database grows; try
``--size 10`` and ``--size 1024``.

Run as root (the server then runs as the postgres user) or as a user who may run
PostgreSQL: python bench/export.py [--size MB] [--runs N]
"""

import argparse
import statistics
import subprocess
import sys

from pgroot import SERVICE, gokku, pg_bin, postgres_root, timed
from sshbench import report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100, help="MB of data (default 100)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each (default 5)")
    args = parser.parse_args()
    pg_dump = pg_bin("pg_dump")

    with postgres_root() as (top, env):
        rows = args.size * 256  # 4 KiB each
        fill = (
            "create table blobs (id int primary key, body bytea);"
            "insert into blobs select g, decode(string_agg(md5(random()::text || g || i), ''),"
            f" 'hex') from generate_series(1, {rows}) g, generate_series(1, 256) i group by g;"
        )
        print(f"filling {SERVICE} with {args.size} MB of random bytes ...", flush=True)
        gokku(env, "pg:connect", SERVICE, "-q", "-c", fill)
        dsn = gokku(env, "pg:info", SERVICE, "--dsn", capture_output=True, text=True).stdout.strip()

        through_gokku = [sys.executable, "-m", "gokku", "postgres:export", SERVICE]
        directly = [pg_dump, "--format=custom", f"--dbname={dsn}"]
        dump = top / "dump"
        timed(through_gokku, env, dump, subprocess.DEVNULL)  # warm the caches for both
        size = dump.stat().st_size
        times: dict[str, list[float]] = {"gokku": [], "pg_dump": []}
        for run in range(1, args.runs + 1):
            times["gokku"].append(timed(through_gokku, env, dump, subprocess.DEVNULL))
            times["pg_dump"].append(timed(directly, env, dump, subprocess.DEVNULL))
            print(
                f"run {run}: gokku {times['gokku'][-1]:.3f} s, pg_dump {times['pg_dump'][-1]:.3f} s"
            )
        medians = {name: statistics.median(values) for name, values in times.items()}
        ratio = medians["gokku"] / medians["pg_dump"]
        text = "\n".join(
            [
                f"dump size:          {size / 1e6:.1f} MB",
                f"median pg_dump:     {medians['pg_dump']:.3f} s",
                f"median gokku:       {medians['gokku']:.3f} s",
                f"ratio gokku/direct: {ratio:.3f} ({(ratio - 1) * 100:+.1f}%; target +2% at 1 GB)",
            ]
        )
        data = {"size_mb": args.size, "dump_bytes": size, "seconds": times, "ratio": ratio}
        report("export", text, data)


if __name__ == "__main__":
    main()
