"""A throwaway Gokku state root with the bundled postgres plugin and one service, for the
benchmarks that time PostgreSQL work through Gokku against the same tool run directly."""

import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SERVICE = "bench"


def pg_bin(name: str) -> str:
    """The newest installed PostgreSQL's NAME."""
    found = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    return max(found, key=lambda p: int(p.split("/")[-3]))


def gokku(env: dict[str, str], *args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gokku", *args], env=env, cwd=REPO, check=True, **kwargs
    )


def timed(
    command: list[str], env: dict[str, str], out: Path | None = None, stderr: int | None = None
) -> float:
    """Seconds ``command`` takes, its output into ``out`` (or nowhere)."""
    with open(out or os.devnull, "wb") as sink:
        start = time.perf_counter()
        subprocess.run(command, env=env, cwd=REPO, stdout=sink, stderr=stderr, check=True)
        return time.perf_counter() - start


@contextlib.contextmanager
def postgres_root(*also: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A state root with service SERVICE running, and the environment that reaches it;
    SERVICE and the services named in ``also`` are destroyed afterwards."""
    # The server's user must be able to reach the state root: not a private temp dir.
    top = Path(tempfile.mkdtemp(prefix="gokku-bench-"))
    top.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GOKKU_")}
    env |= {"GOKKU_ROOT": str(top / "root"), "PYTHONPATH": str(REPO)}
    try:
        gokku(env, "--quiet", "plugins:add", "postgres")
        gokku(env, "--quiet", "services:create", "postgres", "--name", SERVICE)
        yield top, env
    finally:
        for name in (*also, SERVICE):
            subprocess.run(
                [sys.executable, "-m", "gokku", "--quiet", "services:destroy", name, "--force"],
                env=env,
                cwd=REPO,
                stderr=subprocess.DEVNULL,
            )
        shutil.rmtree(top, ignore_errors=True)
