"""Command latency: ``ssh HOST version`` through the embedded server and through the
OpenSSH forced-command door, against plain OpenSSH running ``true``.

Each run is one whole ``ssh`` client invocation (connect, key exchange, authentication,
the command, exit status), the way a user or a script meets it. The three targets take
turns, so a noisy moment hurts all of them alike. Target: the embedded server's median and
its p99 each at or below 0.3x plain OpenSSH's.

OpenSSH 9 clients and servers agree on sntrup761x25519 (post-quantum) key exchange, which
asyncssh does not offer, so the embedded server gets curve25519. The last row is plain
OpenSSH held to curve25519 too, to show how much of the difference that is.

    sudo python bench/latency.py [--runs 200]
"""

import argparse
import dataclasses
import subprocess

from sshbench import Target, lab, median, percentile, report, table, timed


def measure(targets: list[tuple[Target, str]], runs: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {target.name: [] for target, _ in targets}
    for _ in range(runs):
        for target, command in targets:
            seconds, code = timed([*target.argv, command], stdout=subprocess.DEVNULL)
            if code != 0:
                raise SystemExit(f"{target.name} {command!r} exited {code}")
            times[target.name].append(seconds)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    with lab() as bed:
        kex = ["-o", "KexAlgorithms=curve25519-sha256"]
        classic = dataclasses.replace(
            bed.plain,
            name="openssh curve25519",
            argv=[*bed.plain.argv[:-1], *kex, bed.plain.argv[-1]],
        )
        targets = [
            (bed.embedded, "version"),
            (bed.forced, "version"),
            (bed.plain, "true"),
            (classic, "true"),
        ]
        measure(targets, 3)  # warm the page cache and the servers
        times = measure(targets, args.runs)
    base = median(times[bed.plain.name])
    base_p99 = percentile(times[bed.plain.name], 0.99)
    rows, data = [], {}
    for target, command in targets:
        values = times[target.name]
        mid, p99 = median(values), percentile(values, 0.99)
        rows.append([target.name, command, mid * 1000, p99 * 1000, mid / base, p99 / base_p99])
        data[target.name] = {"command": command, "median_s": mid, "p99_s": p99, "runs": values}
    header = ["door", "command", "median ms", "p99 ms", "x openssh", "p99 x openssh"]
    text = table(header, rows)
    report("latency", text, {"runs": args.runs, "results": data})


if __name__ == "__main__":
    main()
