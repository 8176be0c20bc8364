"""Start-up: ``gokku version``, a plugin helper's callback and the OpenSSH door's forced
command run on the server, against ``python3 -c pass`` and ``bash -c true`` (what any
Python tool, and any shell script, costs to start). Wall time and CPU time (the command's
user + system): a plugin calls back several times a command, every session through sshd
starts the forced command, and the test suite does both thousands of times a run.

    python bench/startup.py [--runs 200]
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import sysconfig
import tempfile

from sshbench import median, percentile, report, table, timed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = {
    "gokku version": ["-m", "gokku", "version"],
    # What the helpers' _gokku runs for config_get (plugin-helpers.sh).
    "callback config:get": ["-m", "gokku.callback", "config:get", "bench", "KEY"],
    # What sshd runs for a key's session (its command= line), the client having asked for
    # ``version``; the fingerprint is filled in once the key is registered.
    "OpenSSH door version": ["-m", "gokku", "ssh-command", "--fingerprint"],
    "python3 -c pass": ["-c", "pass"],
}


def installed_python(folder: str) -> list[str]:
    """An interpreter that finds Gokku as an installed server's does (``ops/install``: a
    plain directory in its site-packages), started as the installed command starts it.

    Not this checkout's ``.venv``: its editable install adds a finder that every start of
    its interpreter imports, Gokku's or not (11 ms here, ``pathlib`` and ``urllib.parse``
    among it). ``python3 -c pass`` would pay it too, and Gokku's starts would look that
    much cheaper beside it than an installed server's are."""
    venv = os.path.join(folder, "python")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    python = os.path.join(venv, "bin", "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # The checkout first, then the dependencies already installed (asyncssh, PyYAML); a
    # directory named in a .pth file is only added to the path, its own .pth files unread.
    with open(os.path.join(site, "gokku.pth"), "w") as pth:
        pth.write(f"{REPO}\n{sysconfig.get_path('purelib')}\n")
    return [python, "-P"]


def measured(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall and CPU seconds of one run (CPU: the command's and its children's)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, code = timed(argv, env=env, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        raise SystemExit(f"{' '.join(argv)} exited {code}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="gokku-bench-")
    root = os.path.join(folder, "root")
    python = installed_python(folder)
    env = {**os.environ, "GOKKU_ROOT": root}
    session = {"SSH_ORIGINAL_COMMAND": "version", "SSH_CONNECTION": "127.0.0.1 1 127.0.0.1 22"}
    door_env = {**env, **session}
    names = [*COMMANDS, "bash -c true"]
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    try:
        key = os.path.join(folder, "bench_key")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True)
        for setup in (
            ["apps:create", "bench"],
            ["config:set", "bench", "KEY=value"],
            ["ssh-keys:add", "bench", f"{key}.pub", "--role", "admin"],
        ):
            subprocess.run(
                [*python, "-m", "gokku", *setup], env=env, check=True, capture_output=True
            )
        listed = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True)
        door = [*COMMANDS["OpenSSH door version"], listed.stdout.split()[1], "--root", root]
        commands = {
            **{name: [*python, *args] for name, args in COMMANDS.items()},
            "OpenSSH door version": [*python, *door],
            "bash -c true": ["bash", "-c", "true"],
        }
        for _ in range(args.runs):
            for name, argv in commands.items():
                seconds, used = measured(argv, door_env if "door" in name else env)
                wall[name].append(seconds)
                cpu[name].append(used)
    finally:
        shutil.rmtree(folder)
    baseline = median(wall["python3 -c pass"])
    rows = [
        [
            name,
            median(v) * 1000,
            percentile(v, 0.99) * 1000,
            median(cpu[name]) * 1000,
            median(v) / baseline,
        ]
        for name, v in wall.items()
    ]
    header = ["command", "median ms", "p99 ms", "CPU ms (median)", "x python3 -c pass"]
    data = {
        n: {"median_s": median(v), "p99_s": percentile(v, 0.99), "cpu_median_s": median(cpu[n])}
        for n, v in wall.items()
    }
    report("startup", table(header, rows), {"runs": args.runs, "results": data})


if __name__ == "__main__":
    main()
