"""A full disk, for real: a small tmpfs mounted over part of the state, then filled.

Mounting needs root; the tests that use it are skipped elsewhere.
"""

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

FILLER = ".filler"


@contextlib.contextmanager
def tmpfs(folder: Path, size: str = "1m") -> Iterator[Path]:
    """``folder`` as a tmpfs of ``size`` for the duration (made if missing, then unmounted)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], check=True)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Write a file into ``folder`` until the filesystem says it is full; return it."""
    path = folder / FILLER
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    finally:
        os.close(fd)
    return path


def temp_files(folder: Path) -> list[Path]:
    """What a killed or failed atomic write would leave behind (``.NAME.XXXX.tmp``)."""
    return [p for p in folder.rglob(".*.tmp") if p.is_file()]
