"""Scale: N sessions open at the same time (default 2,000), each running a command that
says ``ready`` and then waits for the end of its input: through the embedded server
(``bench:hold``) and through plain OpenSSH (``echo ready; cat > /dev/null``).

The clients are asyncssh connections in this one process (2,000 OpenSSH client processes
would measure the clients), connecting at most CONNECTING at a time as a crowd of users
would, not 2,000 key exchanges in one instant. Once every session has said ``ready`` they
are all alive at once; then the server's memory is read, every session's input is closed
and its exit status collected. Errors are sessions that failed to open, to say ``ready``
or to exit 0 (target 0).

Memory is that of the listening process and every process under it, before the run (idle)
and with all N sessions open: resident (RSS, shared pages counted once per process, as
concurrency.py reports it) and proportional (PSS, shared pages divided among the
processes sharing them: forks of one zygote share most of theirs). Per session is the
PSS growth divided by N.

The bench key is an admin's (``--role``): a session of a command whose output nothing of
Gokku has to touch becomes its script, with no Python process of its own. A member's
output goes through the secret masker (``gokku.redact``), which keeps one per session:
``--role member`` measures that.

    sudo python bench/scale.py [--sessions 2000] [--connecting 100] [--role admin|member]
"""

import argparse
import asyncio
import time

import asyncssh
from sshbench import Target, lab, report, table, tree_pss, tree_rss, tree_size

# How long the sessions may take to open: a minute plus a share per session. sshd opened
# 2,000 in 308 s on a quiet 2-core VM (a re-exec and an sntrup761 exchange each), past the
# fixed 300 s this once was. Those not open by then are errors in the table, not a crash.
READY_SECONDS, READY_SECONDS_EACH = 60.0, 0.5


async def hold(target: Target, command: str, sessions: int, connecting: int) -> dict:
    """Open ``sessions`` sessions, measure with all open, close them; what happened."""
    gate = asyncio.Semaphore(connecting)
    failures: list[str] = []
    opened: list[tuple[asyncssh.SSHClientConnection, asyncssh.SSHClientProcess]] = []
    idle_pss, idle_rss = tree_pss(target.pid), tree_rss(target.pid)

    async def one() -> None:
        try:
            async with gate:
                conn = await asyncssh.connect(
                    "127.0.0.1",
                    target.port,
                    username=target.user,
                    client_keys=[str(target.key)],
                    known_hosts=None,
                    agent_path=None,
                )
            process = await conn.create_process(command, encoding=None)
            opened.append((conn, process))
            line = await process.stdout.readline()
            if line != b"ready\n":
                failures.append(f"said {line!r}, not ready")
        except (OSError, asyncssh.Error) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")

    started = time.perf_counter()
    deadline = READY_SECONDS + READY_SECONDS_EACH * sessions
    tasks = [asyncio.ensure_future(one()) for _ in range(sessions)]
    _, late = await asyncio.wait(tasks, timeout=deadline)
    for task in late:
        task.cancel()
    failures += [f"not open after {deadline:.0f} s"] * len(late)
    ready_s = time.perf_counter() - started
    open_pss, open_rss = tree_pss(target.pid), tree_rss(target.pid)
    processes = tree_size(target.pid)
    for _, process in opened:
        process.stdin.write_eof()
    statuses = await asyncio.gather(*(process.wait() for _, process in opened))
    failures += [f"exit {s.exit_status}" for s in statuses if s.exit_status != 0]
    for conn, _ in opened:
        conn.close()
    await asyncio.gather(*(conn.wait_closed() for conn, _ in opened))
    return {
        "door": target.name,
        "sessions": sessions,
        "errors": len(failures),
        "failures": sorted(set(failures)),
        "all_ready_s": ready_s,
        "server_processes": processes,
        "idle_pss_mib": idle_pss / 2**20,
        "open_pss_mib": open_pss / 2**20,
        "open_rss_mib": open_rss / 2**20,
        "idle_rss_mib": idle_rss / 2**20,
        "pss_kib_per_session": (open_pss - idle_pss) / 1024 / sessions,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=2000)
    parser.add_argument("--connecting", type=int, default=100)
    parser.add_argument("--role", choices=("admin", "member"), default="admin")
    args = parser.parse_args()
    with lab(role=args.role) as bed:
        runs = [(bed.embedded, "bench:hold"), (bed.plain, "echo ready; cat > /dev/null")]
        results = []
        for target, command in runs:
            result = asyncio.run(hold(target, command, args.sessions, args.connecting))
            print(result, flush=True)
            results.append(result)
    base = results[-1]
    rows = [
        [
            r["door"],
            r["sessions"],
            r["errors"],
            r["all_ready_s"],
            r["server_processes"],
            r["open_rss_mib"],
            r["open_pss_mib"],
            r["pss_kib_per_session"],
            r["pss_kib_per_session"] / base["pss_kib_per_session"],
        ]
        for r in results
    ]
    header = ["door", "sessions", "errors", "all open s", "processes", "RSS MiB", "PSS MiB"]
    text = table([*header, "PSS KiB/session", "x openssh"], rows)
    report("scale", text, {"connecting": args.connecting, "role": args.role, "results": results})


if __name__ == "__main__":
    main()
