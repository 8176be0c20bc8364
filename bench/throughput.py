"""Throughput: SIZE bytes up (``bench:sink < FILE``) and down (``bench:source FILE > FILE``)
through a plugin command on the embedded server, against OpenSSH's sshd running ``cat``;
one stream, then STREAMS streams at once (aggregate MB/s).

Target: every row at or above 1.0x OpenSSH's rate, in the median. The
data is random (nothing compresses it) and made once; the download lands in a file.
The median of RUNS runs is reported, with the spread beside it: ``median (min-max)``
of the rates, and of each run's ratio (the two servers measured moments apart); every run
is in the JSON.

With the rate, the CPU the server spent per GB moved: user + system time of the
listening process and every process under it (workers, zygotes, sessions, the command
itself: ``cat`` on both sides), reaped ones included, read from /proc before and after
each run. Target: at or below sshd's (1.0x). The clients' CPU is not counted.

With ``--burners N`` the benchmark first starts N processes that spin on the CPU for the
whole run (a shared host's other tenants): the contention is part of the measurement, the
same for both servers, and the results go to ``throughput-burnersN.json``.

    sudo python bench/throughput.py [--size-mib 1024] [--runs 5] [--streams 4] [--burners 1]
        [--ways up]
"""

import argparse
import concurrent.futures
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from sshbench import Target, lab, median, report, spread, table, tree_cpu, tree_size

SETTLE_SECONDS = 5.0  # for the server to reap what a run started


def make_payload(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with open(path, "wb") as out:
        for index in range(size >> 20):
            out.write(index.to_bytes(8, "big") + block[8:])


def transfer(target: Target, command: str, stdin: Path | None, stdout: Path | None) -> None:
    with (
        open(stdin or os.devnull, "rb") as source,
        open(stdout or os.devnull, "wb") as sink,
    ):
        code = subprocess.run([*target.argv, command], stdin=source, stdout=sink).returncode
    if code != 0:
        raise SystemExit(f"{target.name} {command!r} exited {code}")


def rate(
    jobs: list[tuple[Target, str, Path | None, Path | None]], size: int
) -> tuple[float, float]:
    """Aggregate MB/s of running ``jobs`` at once (all on one server), and the server's
    CPU seconds per GB.

    Dirty pages left by the previous run (up to 4 GiB of downloads) are written back first:
    otherwise whichever target runs next pays for that writeback (~10% of a 4-stream run).
    """
    os.sync()
    server = jobs[0][0].pid
    processes, cpu = tree_size(server), tree_cpu(server)
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(transfer, *job) for job in jobs]:
            future.result()
    seconds = time.perf_counter() - started
    deadline = time.monotonic() + SETTLE_SECONDS
    while tree_size(server) > processes and time.monotonic() < deadline:
        time.sleep(0.02)
    moved = size * len(jobs)
    return moved / seconds / 1e6, (tree_cpu(server) - cpu) / (moved / 1e9)


@contextlib.contextmanager
def burning(count: int) -> Iterator[None]:
    """``count`` processes spinning on the CPU until the block ends."""
    spin = [sys.executable, "-c", "while True: pass"]
    burners = [subprocess.Popen(spin) for _ in range(count)]
    try:
        yield
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--burners", type=int, default=0, help="CPU-bound processes alongside")
    parser.add_argument("--ways", default="up,down", help="which directions (up, down, both)")
    args = parser.parse_args()
    size = args.size_mib << 20
    with lab() as bed, burning(args.burners):
        payload = bed.folder / "payload"
        make_payload(payload, size)
        received = [bed.folder / f"received-{i}" for i in range(args.streams)]
        ways = {
            "up": {
                bed.embedded.name: (bed.embedded, "bench:sink", payload, None),
                bed.plain.name: (bed.plain, "cat > /dev/null", payload, None),
            },
            "down": {
                bed.embedded.name: (bed.embedded, f"bench:source {payload}", None, "OUT"),
                bed.plain.name: (bed.plain, f"cat {payload}", None, "OUT"),
            },
        }
        rates: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        for _ in range(args.runs):
            for streams in sorted({1, args.streams}):
                for way, targets in ways.items():
                    if way not in args.ways.split(","):
                        continue
                    for name, (target, command, stdin, stdout) in targets.items():
                        jobs = [
                            (target, command, stdin, received[i] if stdout else None)
                            for i in range(streams)
                        ]
                        key = f"{way} x{streams} {name}"
                        mb_s, cpu_s = rate(jobs, size)
                        rates.setdefault(key, []).append(mb_s)
                        cpus.setdefault(key, []).append(cpu_s)
                        print(f"{key}: {mb_s:.0f} MB/s, {cpu_s:.2f} CPU s/GB", flush=True)
    rows, results = [], {}
    for streams in sorted({1, args.streams}):
        for way in args.ways.split(","):
            ours, theirs = (f"{way} x{streams} {t.name}" for t in (bed.embedded, bed.plain))
            # Each run's ratio pairs two measurements taken moments apart: on a shared
            # host their spread says more than the spread of either rate alone.
            speedup = [a / b for a, b in zip(rates[ours], rates[theirs], strict=True)]
            cost = [a / b for a, b in zip(cpus[ours], cpus[theirs], strict=True)]
            rows.append(
                [way, streams, spread(rates[ours]), spread(rates[theirs])]
                + [median(rates[ours]) / median(rates[theirs]), spread(speedup, 2)]
                + [spread(cpus[ours], 2), spread(cpus[theirs], 2)]
                + [median(cpus[ours]) / median(cpus[theirs]), spread(cost, 2)]
            )
            results[f"{way} x{streams}"] = {
                "embedded_mb_s": rates[ours],
                "openssh_mb_s": rates[theirs],
                "embedded_cpu_s_per_gb": cpus[ours],
                "openssh_cpu_s_per_gb": cpus[theirs],
                "x_openssh": median(rates[ours]) / median(rates[theirs]),
                "x_openssh_per_run": speedup,
                "cpu_x_openssh": median(cpus[ours]) / median(cpus[theirs]),
                "cpu_x_openssh_per_run": cost,
            }
    header = ["way", "streams", "embedded MB/s", "openssh MB/s", "x openssh", "per run"]
    header += ["embedded CPU s/GB", "openssh CPU s/GB", "CPU x openssh", "per run"]
    text = table(header, rows)
    report(
        f"throughput-burners{args.burners}" if args.burners else "throughput",
        text,
        {
            "size_bytes": size,
            "runs": args.runs,
            "streams": args.streams,
            "burners": args.burners,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
