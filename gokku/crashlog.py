"""The server's own log (``log/gokku.log``): where an unexpected exception's traceback goes.

A user of any door sees one line (``dispatcher``); a traceback would show them code they
cannot act on, and over SSH the server's internals. Whoever runs the server finds the
details here. Writing them is best effort: the disk that made the command fail may be
the one that is full.
"""

import os
import time
import traceback

from gokku.audit import redacted
from gokku.errors import system_error
from gokku.paths import Root

LOG_NAME = "gokku.log"
LONGEST_MESSAGE = 200


def unexpected(root: Root | None, argv: list[str], exc: Exception) -> str:
    """Log ``exc`` with its traceback; return the one line the user is told instead."""
    if isinstance(exc, OSError):
        what = system_error(exc)
    else:
        text = " ".join(str(exc).split())[:LONGEST_MESSAGE]
        what = f"internal error: {type(exc).__name__}" + (f": {text}" if text else "")
    if root is None:
        return what
    try:
        _append(root, argv, exc)
    except OSError as failed:
        return f"{what}; its details could not be logged ({system_error(failed)})"
    return f"{what}; details in log/{LOG_NAME}"


def _append(root: Root, argv: list[str], exc: Exception) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    header = f"{stamp} pid {os.getpid()} argv {redacted(argv)!r}\n"
    text = header + "".join(traceback.format_exception(exc))
    root.log.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(root.log / LOG_NAME, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    finally:
        os.close(fd)
