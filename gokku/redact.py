"""What a caller who may only read a service sees of a plugin's output: no secret.

A read grant is for backups and dashboards. A password is more: with a database's
superuser password, ``COPY ... TO PROGRAM`` runs commands as its server. So when the
caller may not write what a plugin command touches, Gokku itself masks the script's
stdout (unless it is declared binary: a dump is the data a read grant exports) and its
stderr, line by line (``Stream``), before they reach the caller:

- the service's own secrets, wherever they appear: its record's password-like values and
  the password of each URL it gives to apps (``DATABASE_URL``...);
- any URL's password (``postgres://user:<redacted>@host/db``) and ``password: x``,
  ``token=x`` shapes;
- the value of each ``Field:`` line the plugin declares secret (plugin.yml
  ``secret: [DSN]``).

A plugin that forgets to declare a field leaks none of the first two. The script is told
which case it is in (``GOKKU_ACCESS=read|write``), to leave secrets out in the first place.

A line is masked whole, whatever the pipe's chunks: a line longer than MAX_LINE (or output
with no newline at all) is sent in parts, each cut where no secret can straddle it: never
inside a known value, nor inside a shape (up to SHAPE_WINDOW bytes long) that may still
go on, and a declared field's value is dropped to the end of its line.
"""

import contextlib
import os
import re
import select
import threading
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple

from gokku.context import Context, replaced

MASK = b"<redacted>"
# Keys of a service's config and env whose values are secrets.
SECRET_KEY = re.compile(r"(?i)pass|secret|token|credential|private|api_?key")
_URL_PASSWORD = re.compile(rb"(://[^\s:/@]*:)[^\s@]+(@)")
# From the keyword on (``PGPASSWORD=x`` keeps its ``PG``): a leading ``\w*``, or an unbounded
# one after the keyword, costs time quadratic in a long run of word characters.
_SHAPED = re.compile(
    rb"(?i)((?:password|passwd|secret|token|api_?key)\w{0,64}[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"
)
SHORTEST_SECRET = 4  # a shorter value would mask ordinary words and numbers everywhere
MAX_LINE = 1 << 16  # a longer run without a newline is sent in parts (``Stream``)
SHAPE_WINDOW = 4096  # how long a shape (``password: x``) may be and still be masked whole
GRACE_SECONDS = 1.0  # after the script: how long what it left behind may still write


class Masker(NamedTuple):
    """Masks one line at a time: known values, declared fields, shapes."""

    values: tuple[bytes, ...] = ()
    fields: tuple[bytes, ...] = ()

    def __call__(self, line: bytes, line_start: bool = True) -> bytes:
        """``line`` masked; ``line_start``: it begins a line (where a field can start)."""
        for value in self.values:
            line = line.replace(value, MASK)
        field = self.field_prefix(line) if line_start else None
        if field is not None:
            body = line.rstrip(b"\r\n")
            line = field + MASK + line[len(body) :]
        line = _URL_PASSWORD.sub(rb"\1" + MASK + rb"\2", line)
        return _SHAPED.sub(rb"\1" + MASK, line)

    def field_prefix(self, line: bytes) -> bytes | None:
        """``DSN: `` when ``line`` is a declared secret field's, else None."""
        for field in self.fields:
            match = re.match(rb"(?i)(\s*" + re.escape(field) + rb"\s*:\s*)\S", line)
            if match:
                return match.group(1)
        return None

    def safe_cut(self, data: bytes) -> int:
        """Where ``data``, the start of a line that goes on, can be cut so that masking
        each side alone masks what masking the whole line would: not inside a known
        value, nor inside a shape that may go on past the end (0: nowhere yet)."""
        window = max([SHAPE_WINDOW, *(len(v) for v in self.values)])
        spans = [
            (m.start(), m.end(), False)
            for v in self.values
            for m in re.finditer(re.escape(v), data)
        ]
        spans += [
            (m.start(), m.end(), m.end() == len(data))
            for p in (_URL_PASSWORD, _SHAPED)
            for m in p.finditer(data)
        ]
        cut, moved = max(len(data) - window, 0), True
        while moved:  # the cut only moves back: this ends
            moved = False
            for start, end, open_ended in spans:
                if start < cut and (cut < end or open_ended):
                    cut, moved = start, True
        return cut


def masker(
    record: dict[str, Any] | None, fields: Iterable[str], known: Iterable[str] = ()
) -> Masker:
    """The masker for a service's ``record`` (None: no service), declared ``fields`` and
    ``known`` secrets (the plugin's secret settings)."""
    found: set[str] = set(known)
    for section in ("config", "env"):
        values = (record or {}).get(section)
        for key, value in (values if isinstance(values, dict) else {}).items():
            text = str(value)
            if SECRET_KEY.search(str(key)):
                found.add(text)
            found.update(m.group(1) for m in re.finditer(r"://[^\s:/@]*:([^\s@]+)@", text))
    secrets = sorted((v.encode() for v in found if len(v) >= SHORTEST_SECRET), key=len)
    return Masker(tuple(reversed(secrets)), tuple(f.encode() for f in fields))


@contextlib.contextmanager
def masked(ctx: Context, mask: Masker, stdout: bool = True) -> Iterator[Context]:
    """``ctx`` with its request's stderr (and stdout, when ``stdout``) replaced by pipes
    whose lines are masked on their way to the real streams, until the block ends.

    Pipes even when the caller has a terminal (stdin keeps it): a program that draws on
    one (cursor moves, a line written in pieces) could show a secret no masker sees whole."""
    request = ctx.request
    streams = {"stderr": request.stderr, **({"stdout": request.stdout} if stdout else {})}
    ends: dict[str, BinaryIO] = {}
    copiers: list[_Copier] = []
    try:
        for name, target in streams.items():
            read_end, write_end = os.pipe()
            ends[name] = open(write_end, "wb", buffering=0)  # noqa: SIM115 - closed below
            copiers.append(_Copier(read_end, target, mask))
        yield replaced(ctx, request=replaced(request, **ends))
    finally:
        for end in ends.values():
            end.close()
        for copier in copiers:
            copier.finish()


class _Copier(threading.Thread):
    """Copies a pipe to a stream, masking each line."""

    def __init__(self, fd: int, target: BinaryIO, mask: Masker) -> None:
        super().__init__(daemon=True)
        self.fd, self.target, self.mask = fd, target, mask
        self.stop = threading.Event()
        self.start()

    def finish(self) -> None:
        """Wait for the end of the output: EOF, or what a leftover process still holds
        open after a grace period."""
        self.join(GRACE_SECONDS)
        self.stop.set()
        self.join()

    def run(self) -> None:
        stream = Stream(self.mask)
        try:
            while not self.stop.is_set():
                if not select.select([self.fd], [], [], 0.1)[0]:
                    continue
                data = os.read(self.fd, 1 << 16)
                if not data:
                    break
                self._send(stream.feed(data))
            self._send(stream.end())
        except (OSError, ValueError):
            pass  # the caller is gone: closing our end lets the script see it (EPIPE)
        finally:
            os.close(self.fd)

    def _send(self, data: bytes) -> None:
        if data:
            self.target.write(data)
            self.target.flush()


# Where a masked value that was still going on ends: a declared field's at its line's
# end, a shape's at the first byte that ends one.
_FIELD_END = re.compile(rb"\r?\n")
_TOKEN_END = re.compile(rb"[\s\"',;&@]")


class Stream:
    """Output masked as it comes, in chunks cut anywhere: whole lines masked at once, a
    line longer than MAX_LINE in parts cut where ``Masker.safe_cut`` allows. A line no
    cut can split (a shape longer than its window, a declared field) has the rest of
    its secret dropped as it comes."""

    def __init__(self, mask: Masker) -> None:
        self.mask = mask
        self.pending = b""
        self.line_start = True  # pending begins a line
        self.dropping: re.Pattern[bytes] | None = None  # dropping up to this

    def feed(self, data: bytes) -> bytes:
        """What can be sent of the output so far, masked."""
        self.pending += data
        out = []
        while True:
            if self.dropping is not None:
                end = self.dropping.search(self.pending)
                self.pending = self.pending[end.start() :] if end else b""
                if end is None:
                    break
                self.dropping = None
            whole = self.pending.rfind(b"\n") + 1  # every complete line, at once
            if whole:
                lines = self.pending[:whole].splitlines(keepends=True)
                out.append(self.mask(lines[0], self.line_start))
                out.extend(self.mask(line) for line in lines[1:])
                self.pending, self.line_start = self.pending[whole:], True
            elif len(self.pending) > MAX_LINE and (part := self._part()):
                out.append(part)
            else:
                break
        return b"".join(out)

    def end(self) -> bytes:
        """The rest, masked, once the output ended."""
        rest = b"" if self.dropping is not None else self.mask(self.pending, self.line_start)
        self.pending = b""
        return rest

    def _part(self) -> bytes:
        """The first part of a long line: up to a safe cut, or, when there is none within
        MAX_LINE * 16 bytes, all of it masked and the secret still going on dropped."""
        field = self.mask.field_prefix(self.pending) if self.line_start else None
        cut = 0 if field is not None else self.mask.safe_cut(self.pending)
        if cut == 0 and field is None and len(self.pending) < MAX_LINE * 16:
            return b""
        if cut == 0:
            part = field + MASK if field is not None else self.mask(self.pending, self.line_start)
            self.pending, self.dropping = b"", (_FIELD_END if field is not None else _TOKEN_END)
        else:
            part, self.pending = self.mask(self.pending[:cut], self.line_start), self.pending[cut:]
        self.line_start = False
        return part
