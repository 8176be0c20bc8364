"""The audit log: one JSON line per command that came in over SSH (``log/audit.log``).

Each line is written with a single ``write`` on an ``O_APPEND`` descriptor while holding
an flock on the file, so concurrent sessions never interleave or lose lines.
"""

import fcntl
import json
import os
import secrets
import time
from dataclasses import asdict, dataclass, field

from gokku.paths import Root

LOG_NAME = "audit.log"


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
    root.log.mkdir(mode=0o700, parents=True, exist_ok=True)
    line = json.dumps(asdict(entry), ensure_ascii=False, separators=(",", ":")) + "\n"
    fd = os.open(root.log / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)
