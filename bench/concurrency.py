"""Concurrency: N sessions started at once (``ssh HOST version``, and ``true`` for plain
OpenSSH), for N = 100 and 500: errors (target 0), p50/p99 latency, and the peak resident
memory of the server with everything it started (sampled every 20 ms).

The server's connection caps are raised for the run (see sshbench.SETTINGS): the point
is what the machine can take, not the default caps.

    sudo python bench/concurrency.py [--sessions 100 500] [--rounds 2]
"""

import argparse
import concurrent.futures
import subprocess
import threading
import time

from sshbench import Target, lab, median, percentile, report, table, tree_rss


def burst(target: Target, command: str, sessions: int) -> tuple[list[float], list[str], int]:
    """Latencies, what the failed clients said, and peak server memory (bytes) of
    ``sessions`` clients at once."""
    peak = tree_rss(target.pid)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, tree_rss(target.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    start = threading.Barrier(sessions)

    def one(_: int) -> tuple[float, str | None]:
        start.wait()
        started = time.perf_counter()
        proc = subprocess.run([*target.argv, command], capture_output=True)
        failure = None
        if proc.returncode != 0:
            said = proc.stderr.decode(errors="replace").strip().splitlines()
            failure = f"exit {proc.returncode}: {said[-1] if said else '(nothing on stderr)'}"
        return time.perf_counter() - started, failure

    try:
        with concurrent.futures.ThreadPoolExecutor(sessions) as pool:
            results = list(pool.map(one, range(sessions)))
    finally:
        done.set()
        sampler.join()
    return [t for t, _ in results], [f for _, f in results if f], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[100, 500])
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    rows, results = [], []
    with lab() as bed:
        targets = [(bed.embedded, "version"), (bed.forced, "version"), (bed.plain, "true")]
        for sessions in args.sessions:
            for round_ in range(args.rounds):
                for target, command in targets:
                    times, failures, peak = burst(target, command, sessions)
                    row = {
                        "door": target.name,
                        "sessions": sessions,
                        "round": round_ + 1,
                        "errors": len(failures),
                        "failures": sorted(set(failures)),
                        "p50_s": median(times),
                        "p99_s": percentile(times, 0.99),
                        "peak_rss_mib": peak / 2**20,
                    }
                    results.append(row)
                    print(row, flush=True)
    for sessions in args.sessions:
        base = [r for r in results if r["sessions"] == sessions and r["door"] == bed.plain.name]
        for target, command in targets:
            mine = [r for r in results if r["sessions"] == sessions and r["door"] == target.name]
            p50 = median([r["p50_s"] for r in mine])
            rows.append(
                [
                    target.name,
                    command,
                    sessions,
                    sum(r["errors"] for r in mine),
                    p50 * 1000,
                    median([r["p99_s"] for r in mine]) * 1000,
                    p50 / median([r["p50_s"] for r in base]),
                    median([r["peak_rss_mib"] for r in mine]),
                ]
            )
    header = ["door", "command", "sessions", "errors", "p50 ms", "p99 ms", "p50 x openssh"]
    text = table([*header, "server MiB"], rows)
    report("concurrency", text, {"rounds": args.rounds, "results": results})


if __name__ == "__main__":
    main()
