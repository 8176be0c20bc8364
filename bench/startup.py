"""Start-up: ``gokku version`` run on the server, against ``python3 -c pass`` and
``bash -c true`` (what any Python tool, and any shell script, costs to start).

    python bench/startup.py [--runs 200]
"""

import argparse
import subprocess
import sys

from sshbench import median, percentile, report, table, timed

COMMANDS = {
    "gokku version": [sys.executable, "-m", "gokku", "version"],
    "python3 -c pass": [sys.executable, "-c", "pass"],
    "bash -c true": ["bash", "-c", "true"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.runs):
        for name, argv in COMMANDS.items():
            seconds, code = timed(argv, stdout=subprocess.DEVNULL)
            if code != 0:
                raise SystemExit(f"{name} exited {code}")
            times[name].append(seconds)
    python = median(times["python3 -c pass"])
    rows = [
        [name, median(v) * 1000, percentile(v, 0.99) * 1000, median(v) / python]
        for name, v in times.items()
    ]
    text = table(["command", "median ms", "p99 ms", "x python3 -c pass"], rows)
    data = {n: {"median_s": median(v), "p99_s": percentile(v, 0.99)} for n, v in times.items()}
    report("startup", text, {"runs": args.runs, "results": data})


if __name__ == "__main__":
    main()
