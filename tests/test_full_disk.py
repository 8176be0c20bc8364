"""Writes that are no part of a change never stop it, and a write that was made says so.

Progress lines and diagnostics go to stderr; a stderr that cannot take them (a full disk,
for real: ``/dev/full`` answers every write with ENOSPC; a pipe nobody reads any more:
EPIPE) must not stop ``services:create`` half-way, neither in the CLI nor in the plugin's
install script and the helpers it calls back. And a directory fsync that fails after the
rename (for real: a small LD_PRELOAD library, built here with gcc, makes ``fsync`` of a
directory fail with EIO) reports that the value was written.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import reachable_root, server_pid, statuses
from conftest import REPO, Gokku


@pytest.fixture(scope="module")
def gk() -> Iterator[Gokku]:
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    with reachable_root("redis") as gokku:
        yield gokku


@contextlib.contextmanager
def unwritable_stderr(kind: str) -> Iterator[int]:
    """A descriptor every write to which fails: ENOSPC (``full``) or EPIPE (``closed``)."""
    if kind == "full":
        fd = os.open("/dev/full", os.O_WRONLY)
    else:
        read_end, fd = os.pipe()
        os.close(read_end)
    try:
        yield fd
    finally:
        os.close(fd)


@pytest.mark.parametrize("kind", ["full", "closed"])
def test_a_stderr_that_takes_no_progress_line_aborts_no_create(gk: Gokku, kind: str) -> None:
    name = f"cache-{kind}"
    with unwritable_stderr(kind) as stderr:
        proc = subprocess.run(
            [sys.executable, "-m", "gokku", "services:create", "redis", "--name", name],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=gk.env,
            cwd=REPO,
            timeout=120,
        )
    assert proc.returncode == 0
    assert statuses(gk)[name] == "running"
    assert server_pid(gk.root / "services" / name) is not None
    record = json.loads((gk.root / "services" / name / "config.json").read_text())
    assert record["config"]["port"] and record["env"]["REDIS_URL"].startswith("redis://")


SHIM = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/stat.h>

/* fsync of a directory fails as a failing disk makes it fail; files sync as usual. */
int fsync(int fd) {
    struct stat st;
    if (fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
"""


@pytest.fixture
def failing_dir_fsync(tmp_path: Path) -> Path:
    if not shutil.which("gcc"):
        pytest.skip("gcc is not installed (ops/test installs it)")
    source = tmp_path / "dirsync.c"
    source.write_text(SHIM)
    library = tmp_path / "dirsync.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", library, source, "-ldl"], check=True)
    return library


def test_a_directory_fsync_failure_after_the_rename_says_the_value_was_written(
    gokku: Gokku, failing_dir_fsync: Path
) -> None:
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "-a", "api", "K=old")
    env_file = gokku.root / "apps" / "api" / "shared" / ".env"
    result = gokku("config:set", "-a", "api", "K=new", env={"LD_PRELOAD": str(failing_dir_fsync)})
    assert result.code == 1
    assert result.stderr.splitlines() == [
        f" !     {env_file} was written, but syncing its directory failed (input/output "
        "error): the new value is in place and may be lost if the system crashes now"
    ]
    assert gokku.ok("config:get", "-a", "api", "K").stdout == "new\n"
    assert not list(env_file.parent.glob(".*.tmp"))
