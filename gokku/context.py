"""The request every door produces, and the context a command runs in.

A door (the ``gokku`` CLI, the embedded SSH server, the OpenSSH forced command) turns
what it received into a ``Request``; the dispatcher never learns which door it was.
"""

import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, BinaryIO

from gokku.paths import Root

if TYPE_CHECKING:
    from gokku.keys import Key


@dataclass(frozen=True)
class Identity:
    """Who is calling: a registered key (over SSH) or the local user (always admin: it
    owns the state anyway). ``grants`` maps ``app:NAME``/``service:NAME`` to read/write;
    ``bound``, for a member, the incarnation of each that its grant holds on (``keys.live``)
    when the command started: what its access was decided on (``access.decided``)."""

    name: str
    fingerprint: str = ""
    role: str = "admin"
    remote: str = ""
    grants: Mapping[str, str] = field(default_factory=dict)
    over_ssh: bool = False
    bound: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def local(cls) -> "Identity":
        import pwd

        return cls(name=pwd.getpwuid(os.geteuid()).pw_name)

    @classmethod
    def of_key(cls, key: "Key", remote: str) -> "Identity":
        # An admin may act on whatever is under a name: its access is bound to none. ("": a
        # grant from before ids, bound to an app or service from before ids, apps.LEGACY.)
        bound = {} if key.role == "admin" else {t: key.bound.get(t, "") for t in key.grants}
        return cls(key.name, key.fingerprint, key.role, remote, dict(key.grants), True, bound)


@dataclass
class Request:
    """argv, identity and the three byte streams; ``term`` is set when a pty was granted."""

    argv: list[str]
    identity: Identity
    stdin: BinaryIO = field(default_factory=lambda: sys.stdin.buffer)
    stdout: BinaryIO = field(default_factory=lambda: sys.stdout.buffer)
    stderr: BinaryIO = field(default_factory=lambda: sys.stderr.buffer)
    term: str | None = None
    denied: str | None = None  # set when access was refused, for the audit line


@dataclass
class Context:
    """One command's view: the request, the state root and the global flags."""

    request: Request
    root: Root
    quiet: bool = False
    trace: bool = False
    format: str = "text"
    app: str | None = None
    verb: str = ""

    def out(self, text: str = "") -> None:
        """Write a line of output (stdout)."""
        self.request.stdout.write(text.encode("utf-8") + b"\n")
        self.request.stdout.flush()

    def info(self, text: str) -> None:
        """A progress line (``-----> ...``) on stderr, hidden by --quiet."""
        if not self.quiet:
            self._diagnostic(f"-----> {text}\n")

    def warn(self, text: str) -> None:
        self._diagnostic(f" !     {text}\n")

    def _diagnostic(self, line: str) -> None:
        """Progress and warnings tell the caller about a command; they are no part of what
        it does. A stderr that cannot take them (a full disk, a closed pipe, a terminal
        hung up) never stops a change half-way: the line is dropped."""
        try:
            self.request.stderr.write(line.encode("utf-8", "backslashreplace"))
            self.request.stderr.flush()
        except (OSError, ValueError):
            pass

    def out_json(self, value: Any) -> None:
        self.out(json.dumps(value, indent=2, ensure_ascii=False))

    def listing(
        self,
        fmt: str,
        records: list[dict[str, Any]],
        empty: str,
        headers: list[str],
        row: Callable[[dict[str, Any]], list[str]],
    ) -> None:
        """A listing as JSON (``--format json``), else a table, or ``empty`` when none."""
        if fmt == "json":
            self.out_json(records)
        elif not records:
            self.out(empty)
        else:
            self.table(headers, [row(record) for record in records])

    def table(self, headers: list[str], rows: list[list[str]]) -> None:
        """Print an aligned table; the header line is dropped under --quiet for scripts."""
        widths = [
            max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)
        ]
        lines = [] if self.quiet else [headers]
        for row in lines + rows:
            self.out("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
