"""The record of an app's deploys and their output, in ``apps/APP/.deploys/``.

Each deploy is ``N.json`` (number, revision, branch, key, start, duration, result and
why) and ``N.log`` (everything its triggers printed, as the caller saw it), numbered from
1 per app; only the last ``KEEP`` are kept, so a busy app does not fill the disk. The
folder's name cannot be an environment's (those start with a letter or a digit), so it
never meets ``apps/APP/ENV/``. Everything here happens under the app's lock, held by
whoever deploys.

The triggers write into a pipe that a thread copies to the caller (live, line by line as
they come: a push shows them as ``remote:`` lines) and into the log. The pipe, not the
caller's streams, is what the triggers get: the log then holds exactly what was shown,
in the order it was shown, and the caller's stdin is never theirs to read.
"""

import contextlib
import os
import re
import select
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from gokku.context import Context, replaced
from gokku.errors import GokkuError, NotFound
from gokku.paths import Root
from gokku.ssh.relay import ASYNC_SIGNALS, LINGER_SECONDS
from gokku.storage import read_json, write_json

FOLDER = ".deploys"
KEEP = 20
RUNNING, SUCCEEDED, FAILED, INTERRUPTED = "running", "succeeded", "failed", "interrupted"
CHUNK = 64 << 10
_RECORD = re.compile(r"^([0-9]+)\.json$")


def folder(root: Root, app: str) -> Path:
    return root.app_dir(app) / FOLDER


def records(root: Root, app: str) -> list[dict[str, Any]]:
    """The kept records, oldest first."""
    return [read_json(path) for _, path in _numbered(root, app)]


def _numbered(root: Root, app: str) -> list[tuple[int, Path]]:
    place = folder(root, app)
    if not place.is_dir():
        return []
    found = ((_RECORD.match(path.name), path) for path in place.iterdir())
    return sorted((int(match.group(1)), path) for match, path in found if match)


def log_path(root: Root, app: str, number: int | None = None) -> Path:
    """The log of deploy ``number``, else of the last deploy; NotFound when not kept."""
    numbers = [n for n, _ in _numbered(root, app)]
    if not numbers:
        raise NotFound(f"app {app!r} has no deploys yet")
    wanted = numbers[-1] if number is None else number
    path = folder(root, app) / f"{wanted}.log"
    if wanted not in numbers or not path.is_file():
        raise NotFound(
            f"deploy {wanted} of {app!r} is not kept (kept: {numbers[0]} to {numbers[-1]})"
        )
    return path


class Recorder(NamedTuple):
    """A deploy being recorded: ``ctx`` is the caller's context with the triggers' streams
    (stdin empty, stdout and stderr into the tee); ``say`` adds a progress line."""

    ctx: Context
    number: int
    tee: "_Tee"

    def say(self, text: str) -> None:
        self.tee.write(f"-----> {text}\n".encode())


@contextlib.contextmanager
def recording(ctx: Context, app: str, rev: str, branch: str) -> Iterator[Recorder]:
    """Record a new deploy of ``rev``: ``running`` until the block ends, then ``succeeded``,
    or ``failed`` with the error's message. A deploy killed outright (its client gone)
    stays ``running`` on disk; the next one, holding the same lock, marks it interrupted."""
    place = folder(ctx.root, app)
    place.mkdir(mode=0o700, exist_ok=True)
    numbered = _numbered(ctx.root, app)
    for _, path in numbered:
        record = read_json(path)
        if record.get("result") == RUNNING:
            write_json(path, {**record, "result": INTERRUPTED, "reason": "cut off"})
    number = numbered[-1][0] + 1 if numbered else 1
    started = time.time()
    record: dict[str, Any] = {
        "number": number,
        "rev": rev,
        "branch": branch,
        "key": ctx.request.identity.name,
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "duration": None,
        "result": RUNNING,
        "reason": "",
    }
    path = place / f"{number}.json"
    write_json(path, record)
    try:
        with _triggers_context(ctx, place / f"{number}.log") as (sub, tee):
            yield Recorder(sub, number, tee)
        record["result"] = SUCCEEDED
    except GokkuError as exc:
        record.update(result=FAILED, reason=exc.message)
        raise
    finally:
        if record["result"] != RUNNING:  # a KeyboardInterrupt or worse: leave it running
            record["duration"] = round(time.time() - started, 1)
            write_json(path, record)
        for old, stale in numbered[: max(0, len(numbered) + 1 - KEEP)]:
            stale.unlink(missing_ok=True)
            (place / f"{old}.log").unlink(missing_ok=True)


@contextlib.contextmanager
def appending(ctx: Context, app: str, number: int) -> Iterator[Recorder]:
    """Triggers that follow deploy ``number`` (post-deploy): their output goes to its log."""
    with _triggers_context(ctx, folder(ctx.root, app) / f"{number}.log") as (sub, tee):
        yield Recorder(sub, number, tee)


@contextlib.contextmanager
def _triggers_context(ctx: Context, log: Path) -> Iterator[tuple[Context, "_Tee"]]:
    tee = _Tee(ctx.request.stderr, log)
    try:
        with open(os.devnull, "rb") as nothing:
            request = replaced(ctx.request, stdin=nothing, stdout=tee.writer, stderr=tee.writer)
            yield replaced(ctx, request=request), tee
    finally:
        tee.close()


class _Tee:
    """A pipe whose bytes go to the caller as they come and into the log file."""

    def __init__(self, caller: BinaryIO, log: Path) -> None:
        self._caller: BinaryIO | None = caller
        self._log = os.fdopen(os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab")
        read_fd, write_fd = os.pipe()
        self._read = read_fd
        self.writer = os.fdopen(write_fd, "wb")
        self._finished = threading.Event()
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def write(self, data: bytes) -> None:
        self.writer.write(data)
        self.writer.flush()

    def close(self) -> None:
        """Once the triggers are done: the rest of their output, then the log closed. A
        background process a trigger left holding the pipe is waited for only while it
        keeps writing (as the SSH relay does)."""
        self.writer.close()
        self._finished.set()
        self._thread.join()
        self._log.close()

    def _copy(self) -> None:
        # Signals are the main thread's to handle (it waits on the trigger meanwhile).
        signal.pthread_sigmask(signal.SIG_BLOCK, ASYNC_SIGNALS)
        poller = select.poll()
        poller.register(self._read, select.POLLIN)
        try:
            while True:
                if not poller.poll(LINGER_SECONDS * 1000):
                    if self._finished.is_set():
                        return
                    continue
                data = os.read(self._read, CHUNK)
                if not data:
                    return
                self._log.write(data)
                self._log.flush()
                self._show(data)
        finally:
            os.close(self._read)

    def _show(self, data: bytes) -> None:
        if self._caller is None:
            return
        try:
            self._caller.write(data)
            self._caller.flush()
        except (OSError, ValueError):
            self._caller = None  # the caller is gone: the log still gets everything
