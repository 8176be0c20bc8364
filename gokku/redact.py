"""What a caller who may only read a service sees of a plugin's output: no secret.

A read grant is for backups and dashboards. A password is more: with a database's
superuser password, ``COPY ... TO PROGRAM`` runs commands as its server. So when the
caller may not write what a plugin command touches, Gokku itself masks the script's
stdout (unless it is declared binary: a dump is the data a read grant exports) and its
stderr, line by line, before they reach the caller:

- the service's own secrets, wherever they appear: its record's password-like values and
  the password of each URL it gives to apps (``DATABASE_URL``...);
- any URL's password (``postgres://user:<redacted>@host/db``) and ``password: x``,
  ``token=x`` shapes;
- the value of each ``Field:`` line the plugin declares secret (plugin.yml
  ``secret: [DSN]``).

A plugin that forgets to declare a field leaks none of the first two. The script is told
which case it is in (``GOKKU_ACCESS=read|write``), to leave secrets out in the first place.
"""

import contextlib
import dataclasses
import os
import re
import select
import threading
from collections.abc import Iterable, Iterator
from typing import Any, BinaryIO

from gokku.context import Context

MASK = b"<redacted>"
# Keys of a service's config and env whose values are secrets.
SECRET_KEY = re.compile(r"(?i)pass|secret|token|credential|private|api_?key")
_URL_PASSWORD = re.compile(rb"(://[^\s:/@]*:)[^\s@]+(@)")
_SHAPED = re.compile(
    rb"(?i)(\w*(?:password|passwd|secret|token|api_?key)\w*[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"
)
SHORTEST_SECRET = 4  # a shorter value would mask ordinary words and numbers everywhere
MAX_LINE = 1 << 16  # a longer run without a newline is masked and sent as it stands
GRACE_SECONDS = 1.0  # after the script: how long what it left behind may still write


@dataclasses.dataclass(frozen=True)
class Masker:
    """Masks one line at a time: known values, declared fields, shapes."""

    values: tuple[bytes, ...] = ()
    fields: tuple[bytes, ...] = ()

    def __call__(self, line: bytes) -> bytes:
        for value in self.values:
            line = line.replace(value, MASK)
        for field in self.fields:
            match = re.match(rb"(?i)(\s*" + re.escape(field) + rb"\s*:\s*)\S", line)
            if match:
                body = line.rstrip(b"\r\n")
                line = match.group(1) + MASK + line[len(body) :]
        line = _URL_PASSWORD.sub(rb"\1" + MASK + rb"\2", line)
        return _SHAPED.sub(rb"\1" + MASK, line)


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
    whose lines are masked on their way to the real streams, until the block ends."""
    request = ctx.request
    streams = {"stderr": request.stderr, **({"stdout": request.stdout} if stdout else {})}
    ends: dict[str, BinaryIO] = {}
    copiers: list[_Copier] = []
    try:
        for name, target in streams.items():
            read_end, write_end = os.pipe()
            ends[name] = open(write_end, "wb", buffering=0)  # noqa: SIM115 - closed below
            copiers.append(_Copier(read_end, target, mask))
        yield dataclasses.replace(ctx, request=dataclasses.replace(request, **ends))
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
        pending = b""
        try:
            while not self.stop.is_set():
                if not select.select([self.fd], [], [], 0.1)[0]:
                    continue
                data = os.read(self.fd, 1 << 16)
                if not data:
                    break
                pending += data
                cut = pending.rfind(b"\n") + 1 if len(pending) <= MAX_LINE else len(pending)
                if cut:
                    self._send(pending[:cut])
                    pending = pending[cut:]
            if pending:
                self._send(pending)
        except (OSError, ValueError):
            pass  # the caller is gone: closing our end lets the script see it (EPIPE)
        finally:
            os.close(self.fd)

    def _send(self, data: bytes) -> None:
        lines = data.splitlines(keepends=True)
        self.target.write(b"".join(self.mask(line) for line in lines))
        self.target.flush()
