"""The request every door produces, and the context a command runs in.

A door (the ``gokku`` CLI, the embedded SSH server, the OpenSSH forced command) turns
what it received into a ``Request``; the dispatcher never learns which door it was.

Every start of Gokku builds these (a helper's callback, an OpenSSH-door session, the CLI),
so they are NamedTuples and plain classes, not dataclasses: importing ``dataclasses`` and
generating the methods of a start path's records took about a third of such a start
(tests/test_startup.py keeps ``dataclasses`` off those paths).
"""

import json
import os
import sys
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, TypeVar

from gokku.paths import Root

if TYPE_CHECKING:
    from gokku.keys import Key


NO_GRANTS: Mapping[str, str] = MappingProxyType({})


class Identity(NamedTuple):
    """Who is calling: a registered key (over SSH) or the local user (always admin: it
    owns the state anyway). ``grants`` maps ``app:NAME``/``service:NAME`` to read/write;
    ``bound``, for a member, the incarnation of each that its grant holds on (``keys.live``)
    when the command started: what its access was decided on (``access.decided``)."""

    name: str
    fingerprint: str = ""
    role: str = "admin"
    remote: str = ""
    grants: Mapping[str, str] = NO_GRANTS
    over_ssh: bool = False
    bound: Mapping[str, str] = NO_GRANTS

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


class Request:
    """argv, identity and the three byte streams (the process's own unless given);
    ``term`` is set when a pty was granted, ``denied`` when access was refused (for the
    audit line)."""

    def __init__(
        self,
        argv: list[str],
        identity: Identity,
        stdin: BinaryIO | None = None,
        stdout: BinaryIO | None = None,
        stderr: BinaryIO | None = None,
        term: str | None = None,
        denied: str | None = None,
    ) -> None:
        self.argv = argv
        self.identity = identity
        self.stdin = sys.stdin.buffer if stdin is None else stdin
        self.stdout = sys.stdout.buffer if stdout is None else stdout
        self.stderr = sys.stderr.buffer if stderr is None else stderr
        self.term = term
        self.denied = denied


class Context:
    """One command's view: the request, the state root and the global flags."""

    def __init__(
        self,
        request: Request,
        root: Root,
        quiet: bool = False,
        trace: bool = False,
        format: str = "text",
        app: str | None = None,
        verb: str = "",
    ) -> None:
        self.request = request
        self.root = root
        self.quiet = quiet
        self.trace = trace
        self.format = format
        self.app = app
        self.verb = verb

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


Record = TypeVar("Record", Request, Context)


def replaced(record: Record, **changes: Any) -> Record:
    """A copy of ``record`` with ``changes``: the caller's own stays as it was (streams
    swapped for a masked or teed copy are the copy's only)."""
    return type(record)(**{**vars(record), **changes})
