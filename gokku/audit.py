"""The audit log: one JSON line per command that came in over SSH (``log/audit.log``).

Each line is written with a single ``write`` on an ``O_APPEND`` descriptor while holding
an flock on the file, so concurrent sessions never interleave or lose lines. A line that
cannot be written (a full disk) never changes the command's result: the caller says so.
"""

import contextlib
import fcntl
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field

from gokku.errors import AuditFailed, system_error
from gokku.paths import Root

LOG_NAME = "audit.log"
ATTEMPTS = 2  # a failed or short write is tried once more, then reported


def new_id() -> str:
    """A short transaction id, also handy to grep the server log for one command."""
    return secrets.token_hex(8)


@dataclass
class Entry:
    key: str
    fingerprint: str
    remote: str
    argv: list[str]
    id: str = field(default_factory=new_id)
    time: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    pty: bool = False
    exit: int | None = None
    duration: float | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None
    denied: str | None = None  # why access was refused, when it was


# Verbs whose arguments carry values to keep out of the log: KEY=VALUE -> KEY=<redacted>.
SECRET_VALUES = ("config:set",)


def redacted(argv: list[str]) -> list[str]:
    """``argv`` as the audit log keeps it: values given to config:set are not written."""
    verbs = [i for i, word in enumerate(argv) if word in SECRET_VALUES]
    if not verbs:
        return argv
    start = verbs[0] + 1
    return argv[:start] + [
        word.split("=", 1)[0] + "=<redacted>" if "=" in word and not word.startswith("-") else word
        for word in argv[start:]
    ]


def write(root: Root, entry: Entry) -> None:
    """Append ``entry`` as one line, trying twice; AuditFailed when both attempts failed.

    The command the line is about has already run: its caller reports the failure and
    keeps the command's own result."""
    line = (json.dumps(asdict(entry), ensure_ascii=False, separators=(",", ":")) + "\n").encode()
    for attempt in range(1, ATTEMPTS + 1):
        try:
            _append(root, line)
            return
        except OSError as exc:
            if attempt == ATTEMPTS:
                why = system_error(exc)
                raise AuditFailed(f"the audit line was not written ({why})") from exc


def _append(root: Root, line: bytes) -> None:
    """One ``write`` under the file's lock. A line cut short before (a full disk, a crash
    mid-write) is ended first so that ours stands on its own; a short write of ours is
    taken back, so that it leaves no partial line behind."""
    root.log.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = root.log / LOG_NAME
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)  # read: its last byte
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            line = b"\n" + line
        try:
            written = os.write(fd, line)
            if written != len(line):
                raise OSError(0, f"wrote {written} of {len(line)} bytes", str(path))
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)
