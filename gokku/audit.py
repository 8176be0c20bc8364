r"""The audit log: one JSON line per command that came in over SSH (``log/audit.log``).

Each line is written with a single ``write`` on an ``O_APPEND`` descriptor while holding
an flock on the file, so concurrent sessions never interleave or lose lines. A line that
cannot be written (a full disk) never changes the command's result: the caller says so.

A command may carry any bytes (sshd passes the client's command string as it came), so
every text field is escaped before it is written: the line is then always UTF-8, a line
of its own for any tool (no raw line or paragraph separator in it) and unambiguous. A
backslash is ``\\``, a control character (C0, DEL) ``\xNN``, a byte that is not UTF-8
``\xNN`` too (NN from 80: no character below 0x80 is ever such a byte), and a C1 control,
U+2028, U+2029 or any other surrogate ``\uNNNN``.
"""

import contextlib
import fcntl
import json
import os
import re
import time

from gokku.errors import AuditFailed, system_error
from gokku.names import new_id
from gokku.paths import Root

LOG_NAME = "audit.log"
ATTEMPTS = 2  # a failed or short write is tried once more, then reported


class Entry:
    """One command's line in the audit log: who ran what, from where, and how it ended.
    Its fields (``vars``), in this order, are the line's; a door fills in the end."""

    def __init__(
        self,
        key: str,
        fingerprint: str,
        remote: str,
        argv: list[str] | None,
        id: str | None = None,
        time: str | None = None,
        pty: bool = False,
        exit: int | None = None,
        duration: float | None = None,
        bytes_in: int | None = None,
        bytes_out: int | None = None,
        denied: str | None = None,  # why access was refused, when it was
        outcome: str | None = None,  # what an automatic plugin update did (rolled back, why)
    ) -> None:
        self.key = key
        self.fingerprint = fingerprint
        self.remote = remote
        self.argv = argv
        self.id = new_id() if id is None else id
        self.time = _now() if time is None else time
        self.pty = pty
        self.exit = exit
        self.duration = duration
        self.bytes_in = bytes_in
        self.bytes_out = bytes_out
        self.denied = denied
        self.outcome = outcome


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# Verbs whose arguments carry values to keep out of the log: KEY=VALUE -> KEY=<redacted>.
# (A plugin's settings too: whether one is secret is the plugin's to say, not the log's.)
SECRET_VALUES = ("config:set", "plugins:config:set")


def redacted(argv: list[str]) -> list[str]:
    """``argv`` as the audit log keeps it: values given to config:set (and
    plugins:config:set) are not written."""
    verbs = [i for i, word in enumerate(argv) if word in SECRET_VALUES]
    if not verbs:
        return argv
    start = verbs[0] + 1
    return argv[:start] + [
        word.split("=", 1)[0] + "=<redacted>" if "=" in word and not word.startswith("-") else word
        for word in argv[start:]
    ]


# What is escaped: the backslash, C0 and DEL, C1, the Unicode line and paragraph
# separators, and surrogates (U+DC80..U+DCFF are the bytes surrogateescape kept).
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
_ESCAPED_BYTES = range(0xDC80, 0xDD00)


def _escape(match: re.Match[str]) -> str:
    char = ord(match.group())
    if char == ord("\\"):
        return "\\\\"
    if char < 0x80:
        return f"\\x{char:02x}"
    if char in _ESCAPED_BYTES:
        return f"\\x{char - 0xDC00:02x}"
    return f"\\u{char:04x}"


def escaped(value: object) -> object:
    """``value`` with every string in it escaped (see the module's docstring)."""
    if isinstance(value, str):
        return _UNSAFE.sub(_escape, value)
    if isinstance(value, list):
        return [escaped(item) for item in value]
    return value


def write(root: Root, entry: Entry) -> None:
    """Append ``entry`` as one line, trying twice; AuditFailed when both attempts failed.

    The command the line is about has already run: its caller reports the failure and
    keeps the command's own result."""
    fields = {name: escaped(value) for name, value in vars(entry).items()}
    line = (json.dumps(fields, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
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
