"""Atomic file writes and named locks that say who holds them.

Every write goes to a temp file in the same directory, is fsynced and renamed over the
target, so a crash leaves the old or the new file, never half of one. Read-modify-write of
shared state happens under ``lock()``, an flock on ``locks/<name>.lock``.

Plugin scripts run while their caller holds locks and may call back into ``gokku`` (the
helpers do). Such a nested call must not wait on its own parent forever: this process
keeps the names of the locks it holds in a context variable, and the runner writes them
into the environment it builds for a child (GOKKU_HELD_LOCKS), which the child reads as
the locks it may pass through. This process's own environment is never changed. A child
passes through only while the lock is held by one of its ancestors (the holder's pid is
in the lock file): a script that outlived the command that ran it (killed, or one that
left something behind) acts on nothing, since that command's locks are gone.
"""

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from gokku.errors import GokkuError, os_reason

HELD_LOCKS_VAR = "GOKKU_HELD_LOCKS"
DEFAULT_LOCK_TIMEOUT = 120.0


def write_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Replace ``path`` with ``data`` all at once (temp file, fsync, rename, fsync dir).

    Owner-only unless said otherwise: state holds passwords, keys and grants that other
    local users have no business reading. The directory must exist: making it here would
    bring back an app or service that a concurrent destroy just removed. When the system
    refuses (a full disk) the old file stays, no temp file is left, and the error names the
    file it was writing. Once the rename is done the new value is what everyone reads: a
    failure to make the rename durable says so, and that it may not survive a crash."""
    import tempfile  # here: a command that only reads (most callbacks) starts without it

    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise GokkuError(f"{os_reason(exc)} writing {path}") from exc
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise GokkuError(f"{os_reason(exc)} writing {path}") from exc
        raise
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise GokkuError(
            f"{path} was written, but syncing its directory failed ({os_reason(exc)}): "
            "the new value is in place and may be lost if the system crashes now"
        ) from exc


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new private directory in ``parent`` (a staging area or a tombstone to rename
    into). ``tempfile`` is imported here: most commands, and most callbacks, only read."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


def remove_tree(path: Path) -> None:
    """Remove a staging area or tombstone, whatever of it is there. ``shutil`` (with
    ``bz2`` and ``lzma``) is imported here, not by every start that imports apps or
    services: only a command that creates or destroys one removes a tree."""
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise GokkuError(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno})") from exc


def write_json(path: Path, value: Any, mode: int = 0o600) -> None:
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False) + "\n"
    write_atomic(path, text.encode("utf-8"), mode)


# Locks this process holds (its own; those of a parent come from the environment).
_held: ContextVar[frozenset[str]] = ContextVar("gokku_held_locks", default=frozenset())
_held_fds: ContextVar[tuple[int, ...]] = ContextVar("gokku_held_lock_fds", default=())


def held_locks() -> frozenset[str]:
    """What a lock here passes through: ours, and our parent's when we are a plugin
    script's call back into gokku. The runner hands this set on to children."""
    return _held.get() | frozenset(os.environ.get(HELD_LOCKS_VAR, "").split())


def held_lock_fds() -> tuple[int, ...]:
    """The descriptors of the locks this process holds (each closes at exec): a session
    that hands its script over (``gokku.ssh.handover``) passes them on to be held until
    the script exits, and ``release_lock_fd`` ends each."""
    return _held_fds.get()


def release_lock_fd(fd: int) -> None:
    """End a lock held through ``fd`` (one of ``held_lock_fds``, passed on): clear its
    holder's line, as ``lock`` does, then close it."""
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
    os.close(fd)


def lock_timeout() -> float:
    value = os.environ.get("GOKKU_LOCK_TIMEOUT", "")
    try:
        return float(value) if value else DEFAULT_LOCK_TIMEOUT
    except ValueError:
        return DEFAULT_LOCK_TIMEOUT


@contextlib.contextmanager
def lock(
    locks_dir: Path,
    name: str,
    holder: str = "",
    timeout: float | None = None,
    waiting: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """Hold the exclusive lock ``name`` (for example ``app-api``), waiting for it.

    While held, the name is in ``held_locks()`` (until release, nested or not), so that
    child processes (plugin scripts calling helpers) pass through instead of
    deadlocking. When the wait exceeds ``timeout`` seconds (GOKKU_LOCK_TIMEOUT unless
    given) the error names the holder. ``waiting`` is told the holder once, when the lock
    is found busy: a long wait (a deploy behind another) should say what it waits for.
    """
    if name in _held.get():
        yield
        return
    path = locks_dir / f"{name}.lock"
    if name in held_locks():
        _check_held_by_ancestor(path, name)
        yield
        return
    locks_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + (lock_timeout() if timeout is None else timeout)
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if waiting is not None:
                    waiting(_holder(fd))
                    waiting = None
                if time.monotonic() >= deadline:
                    busy = f"{name} is locked by {_holder(fd)}; try again later"
                    raise GokkuError(busy) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.1)
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):  # only for the message of whoever waits (full disk)
            os.pwrite(fd, f"pid {os.getpid()} {holder}".strip().encode() + b"\n", 0)
        token = _held.set(_held.get() | {name})
        fds_token = _held_fds.set((*_held_fds.get(), fd))
        try:
            yield
        finally:
            _held_fds.reset(fds_token)
            _held.reset(token)
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)


def _check_held_by_ancestor(path: Path, name: str) -> None:
    """Refuse a lock our parent said it holds unless the pid in its file (written by the
    holder while it holds it, cleared at release) is one of this process's ancestors."""
    try:
        words = path.read_text(encoding="utf-8", errors="replace").split()
    except FileNotFoundError:
        words = []
    holder = int(words[1]) if len(words) > 1 and words[0] == "pid" and words[1].isdigit() else 0
    if holder <= 1 or holder not in _ancestors():
        raise GokkuError(
            f"{name} is no longer held by the command that ran this script (it ended or was "
            "killed): refusing to act without its lock"
        )


def _ancestors() -> set[int]:
    """The pids above this process, up to init (a process whose parent died has init or
    a subreaper there, never a new process that took the old pid)."""
    found: set[int] = set()
    pid = os.getppid()
    while pid > 1 and pid not in found:
        found.add(pid)
        try:
            with open(f"/proc/{pid}/stat", "rb") as handle:
                stat = handle.read()
        except OSError:
            break
        pid = int(stat[stat.rindex(b")") + 2 :].split()[1])
    return found


def _holder(fd: int) -> str:
    """What the holder of a lock wrote into it: its pid and what it is doing."""
    return os.pread(fd, 512, 0).decode("utf-8", "replace").strip() or "unknown"
