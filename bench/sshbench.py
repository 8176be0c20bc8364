"""The loopback lab every SSH benchmark runs in, and how they report.

One throwaway state root with a ``bench`` plugin (``bench:sink`` reads stdin to the end,
``bench:source FILE`` writes FILE, ``bench:hold`` says ``ready`` and waits for the end of
its input), one registered client key, a ``gokku serve`` and one
OpenSSH sshd. The sshd has two doors: the registry's forced-command lines (the Gokku
door) and a second key allowed to run anything as root (plain OpenSSH, the baseline).
All three are measured in the same run, so ratios compare like with like.

Needs root (sshd runs as root on a loopback port). Results: a table on stdout and
``bench/results/NAME.json`` (the machine, the settings, every number).
"""

import contextlib
import json
import os
import platform
import pwd
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from sshlab import make_key, running_server, running_sshd, ssh_argv  # noqa: E402

RESULTS = REPO / "bench" / "results"
PLUGIN = {
    "commands/sink": "cat > /dev/null\n",
    "commands/source": 'cat "$1"\n',
    "commands/hold": "echo ready\ncat > /dev/null\n",
    **{f"commands/{name}": "true\n" for name in ("help", "info", "logs")},
    **{name: "true\n" for name in ("install", "uninstall")},  # the plugin contract
}
# ``access: any``: the bench key is a member, and these commands name no service.
MANIFEST = (
    "commands:\n  sink: {stdin: data, access: any}\n  source: {stdout: binary, access: any}\n"
    "  hold: {stdin: data, access: any}\n"
)
# Wide enough that only the machine limits a concurrency run, not the server's caps.
# As generous as the baseline sshd's MaxStartups 1000: bursts of clients all log in.
SETTINGS = {
    "max_connections": 2048,
    "max_connections_per_address": 2048,
    "max_connections_per_key": 2048,  # the bench key is one member holding them all
    "max_sessions_per_key": 2048,
    "max_startups": "1000:30:2048",
    "max_startups_per_address": 2048,
}


@dataclass
class Target:
    """One way in: a name for the table and the ssh argv up to (not including) the command
    (and the same as parts, for clients other than OpenSSH's)."""

    name: str
    argv: list[str]
    pid: int  # the listening server process, for memory readings
    port: int
    user: str
    key: Path

    def run(self, command: str, **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run([*self.argv, command], **kwargs)


@dataclass
class Lab:
    embedded: Target  # gokku serve
    forced: Target  # sshd → forced command → gokku ssh-command
    plain: Target  # sshd → the command itself
    folder: Path


@contextlib.contextmanager
def lab(settings: dict | None = None, role: str = "member") -> Iterator[Lab]:
    """Set everything up in a temp directory; tear it all down at the end. ``role``: the
    bench key's (a member's output goes through Gokku's secret masker; an admin's does
    not)."""
    if os.geteuid() != 0:
        raise SystemExit("run as root: the OpenSSH baseline needs sshd on a loopback port")
    import yaml

    folder = Path(tempfile.mkdtemp(prefix="gokku-sshbench-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOKKU_")}
    env |= {"GOKKU_ROOT": str(folder / "root"), "PYTHONPATH": str(REPO)}
    root = folder / "root"
    try:
        root.mkdir()
        (root / "gokku.yml").write_text(yaml.safe_dump({"ssh": {**SETTINGS, **(settings or {})}}))
        keys = folder / "keys"
        keys.mkdir()
        member, admin = make_key(keys, "bench"), make_key(keys, "plain")
        plugin = folder / "bench"
        for rel, body in PLUGIN.items():
            (plugin / rel).parent.mkdir(parents=True, exist_ok=True)
            (plugin / rel).write_text("#!/bin/bash\n" + body)
        (plugin / "plugin.yml").write_text(MANIFEST)
        gokku = [sys.executable, "-m", "gokku"]
        key_add = ["ssh-keys:add", "bench", f"{member.path}.pub", "--role", role]
        for args in (key_add, ["plugins:add", str(plugin)]):
            subprocess.run([*gokku, *args], env=env, check=True, capture_output=True)
        plain_keys = folder / "plain_keys"
        plain_keys.write_text(admin.public)
        authorized = root / "ssh" / "authorized_keys"
        user = pwd.getpwuid(os.geteuid()).pw_name
        with (
            running_server(env) as (server, port),
            running_sshd(
                folder / "sshd", authorized, plain_keys, root_login="prohibit-password"
            ) as (sshd, sshd_port),
        ):

            def target(name: str, pid: int, port: int, user: str, key: Path) -> Target:
                return Target(name, ssh_argv(port, user, key), pid, port, user, key)

            yield Lab(
                embedded=target("embedded", server.pid, port, "gokku", member.path),
                forced=target("openssh-door", sshd.pid, sshd_port, user, member.path),
                plain=target("openssh", sshd.pid, sshd_port, user, admin.path),
                folder=folder,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _tree(pid: int) -> dict[int, list[str]]:
    """The /proc/PID/stat fields after the command name (state first) of ``pid`` and of
    all its descendants, by pid."""
    children: dict[int, list[int]] = {}
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        stats[int(entry.name)] = fields
    found, todo = {}, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            found[current] = stats[current]
        todo += children.get(current, [])
    return found


def tree_rss(pid: int) -> int:
    """Resident memory (bytes) of ``pid`` and all its descendants."""
    return sum(int(fields[21]) for fields in _tree(pid).values()) * os.sysconf("SC_PAGE_SIZE")


def tree_pss(pid: int) -> int:
    """Proportional memory (bytes) of ``pid`` and all its descendants: each shared page
    counted once over all the processes sharing it (forks of one zygote share most)."""
    total = 0
    for child in _tree(pid):
        try:
            rollup = Path(f"/proc/{child}/smaps_rollup").read_text()
        except OSError:
            continue
        pss = next(line for line in rollup.splitlines() if line.startswith("Pss:"))
        total += int(pss.split()[1])
    return total * 1024


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) spent by ``pid`` and its descendants, those still
    running and those already reaped (their time is in the reaper's cutime/cstime)."""
    ticks = sum(sum(int(f) for f in fields[11:15]) for fields in _tree(pid).values())
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_size(pid: int) -> int:
    """How many processes ``pid`` and its descendants are."""
    return len(_tree(pid))


def timed(argv: Sequence[str], **kwargs) -> tuple[float, int]:
    """Seconds a command took, and its exit code."""
    started = time.perf_counter()
    code = subprocess.run(argv, **kwargs).returncode
    return time.perf_counter() - started, code


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def spread(values: Sequence[float], digits: int = 0) -> str:
    """``median (min-max)``: the middle run and how far the others strayed from it."""
    form = f"{{:.{digits}f}}"
    low, mid, high = (form.format(v) for v in (min(values), median(values), max(values)))
    return f"{mid} ({low}-{high})"


def machine() -> dict[str, str | int]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    ssh_version = subprocess.run(["ssh", "-V"], capture_output=True, text=True).stderr.strip()
    import asyncssh

    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "asyncssh": asyncssh.__version__,
        "openssh": ssh_version.split(",")[0],
    }


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (it goes into the README as printed)."""
    cells = [[str(c) for c in header]] + [[_cell(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: object) -> str:
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def report(name: str, text: str, data: dict) -> Path:
    """Print the table; write the numbers (with the machine they ran on) as JSON."""
    print(text)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **data}
    path.write_text(json.dumps({**document, "machine": machine()}, indent=2) + "\n")
    print(f"\n(written to {path.relative_to(REPO)})")
    return path
