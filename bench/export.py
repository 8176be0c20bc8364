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
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sshbench import report

REPO = Path(__file__).resolve().parent.parent
SERVICE = "bench"


def gokku(env: dict[str, str], *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gokku", *args], env=env, cwd=REPO, check=True, **kwargs
    )


def timed(command: list[str], env: dict[str, str], out: Path) -> float:
    with open(out, "wb") as sink:
        start = time.perf_counter()
        subprocess.run(
            command, env=env, cwd=REPO, stdout=sink, stderr=subprocess.DEVNULL, check=True
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=100, help="MB of data (default 100)")
    parser.add_argument("--runs", type=int, default=5, help="runs of each (default 5)")
    args = parser.parse_args()
    pg_dump = max(
        glob.glob("/usr/lib/postgresql/*/bin/pg_dump"), key=lambda p: int(p.split("/")[-3])
    )

    # The server's user must be able to reach the state root: not a private temp dir.
    top = Path(tempfile.mkdtemp(prefix="gokku-bench-"))
    top.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOKKU_")}
    env |= {"GOKKU_ROOT": str(top / "root"), "PYTHONPATH": str(REPO)}
    try:
        gokku(env, "--quiet", "plugins:add", "postgres")
        gokku(env, "--quiet", "services:create", "postgres", "--name", SERVICE)
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
        timed(through_gokku, env, dump)  # warm the caches for both
        size = dump.stat().st_size
        times: dict[str, list[float]] = {"gokku": [], "pg_dump": []}
        for run in range(1, args.runs + 1):
            times["gokku"].append(timed(through_gokku, env, dump))
            times["pg_dump"].append(timed(directly, env, dump))
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
    finally:
        subprocess.run(
            [sys.executable, "-m", "gokku", "--quiet", "services:destroy", SERVICE, "--force"],
            env=env,
            cwd=REPO,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(top, ignore_errors=True)


if __name__ == "__main__":
    main()
