"""Throughput: SIZE bytes up (``bench:sink < FILE``) and down (``bench:source FILE > FILE``)
through a plugin command on the embedded server, against OpenSSH's sshd running ``cat``;
one stream, then STREAMS streams at once (aggregate MB/s).

Single stream targets at least 0.9x OpenSSH each way; several streams at least 1.0x. The
data is random (nothing compresses it) and made once; the download lands in a file.
The median of RUNS runs is reported; every run is in the JSON.

    sudo python bench/throughput.py [--size-mib 1024] [--runs 5] [--streams 4]
"""

import argparse
import concurrent.futures
import os
import subprocess
import time
from pathlib import Path

from sshbench import Target, lab, median, report, table


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


def rate(jobs: list[tuple[Target, str, Path | None, Path | None]], size: int) -> float:
    """Aggregate MB/s of running ``jobs`` at once.

    Dirty pages left by the previous run (up to 4 GiB of downloads) are written back first:
    otherwise whichever target runs next pays for that writeback (~10% of a 4-stream run).
    """
    os.sync()
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        for future in [pool.submit(transfer, *job) for job in jobs]:
            future.result()
    return size * len(jobs) / (time.perf_counter() - started) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--streams", type=int, default=4)
    args = parser.parse_args()
    size = args.size_mib << 20
    with lab() as bed:
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
        for _ in range(args.runs):
            for streams in sorted({1, args.streams}):
                for way, targets in ways.items():
                    for name, (target, command, stdin, stdout) in targets.items():
                        jobs = [
                            (target, command, stdin, received[i] if stdout else None)
                            for i in range(streams)
                        ]
                        key = f"{way} x{streams} {name}"
                        rates.setdefault(key, []).append(rate(jobs, size))
                        print(f"{key}: {rates[key][-1]:.0f} MB/s", flush=True)
    rows, results = [], {}
    for streams in sorted({1, args.streams}):
        for way in ways:
            ours = median(rates[f"{way} x{streams} {bed.embedded.name}"])
            theirs = median(rates[f"{way} x{streams} {bed.plain.name}"])
            rows.append([way, streams, round(ours), round(theirs), ours / theirs])
            results[f"{way} x{streams}"] = {
                "embedded_mb_s": rates[f"{way} x{streams} {bed.embedded.name}"],
                "openssh_mb_s": rates[f"{way} x{streams} {bed.plain.name}"],
            }
    text = table(["way", "streams", "embedded MB/s", "openssh MB/s", "x openssh"], rows)
    report(
        "throughput",
        text,
        {"size_bytes": size, "runs": args.runs, "streams": args.streams, "results": results},
    )


if __name__ == "__main__":
    main()
