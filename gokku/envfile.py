"""Reading and writing an app's ``.env`` file.

Values are written so that ``set -a; . .env`` in Bash reads back exactly what was stored:
plain values bare, anything else single-quoted (``'`` becomes ``'\\''``). The reader also
accepts what other tools write (``export KEY=...``, double quotes, bare values with spaces
as Gokku wrote them).

A rewrite keeps the file as its owner wrote it: comments, blank lines, order and the exact
spelling of every line whose value did not change. Only changed keys are rewritten (in
place, keeping an ``export``), removed keys dropped and new keys appended.
"""

import re
from typing import NamedTuple

from gokku.errors import GokkuError

_SAFE_VALUE = re.compile(r"[A-Za-z0-9_./:@%+,=-]*")
_LINE_START = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=")
_DOUBLE_ESCAPES = {'"': '"', "\\": "\\", "$": "$", "`": "`", "\n": ""}


def quote(value: str) -> str:
    if _SAFE_VALUE.fullmatch(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


class Line(NamedTuple):
    """One entry as written: ``key`` is None for comments and blank lines."""

    key: str | None
    value: str
    text: str  # exactly as in the file, continuation lines and newline included


class EnvFile(NamedTuple):
    """An app's ``.env`` as lines, kept as written (comments too) so that a change
    rewrites only the lines it touches."""

    lines: list[Line]

    @property
    def values(self) -> dict[str, str]:
        """What ``set -a; . .env`` would leave set: the last line of a key wins."""
        return {line.key: line.value for line in self.lines if line.key is not None}

    def render(self, values: dict[str, str]) -> str:
        """The file with ``values`` in it, otherwise as written."""
        old = self.values
        last = {line.key: index for index, line in enumerate(self.lines) if line.key}
        out: list[str] = []
        for index, line in enumerate(self.lines):
            key = line.key
            if key is None or (key in values and values[key] == old[key]):
                out.append(line.text)
            elif key in values and index == last[key]:
                export = "export " if line.text.startswith("export") else ""
                out.append(f"{export}{key}={quote(values[key])}\n")
        if out and not out[-1].endswith("\n"):
            out[-1] += "\n"
        out.extend(f"{key}={quote(value)}\n" for key, value in values.items() if key not in old)
        return "".join(out)


def parse(text: str, source: str = ".env") -> EnvFile:
    """Parse ``text``; a malformed file is an error naming the line, never silently cut."""
    lines: list[Line] = []
    pos, lineno = 0, 1
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        line = text[pos:end]
        if not line.strip() or line.lstrip().startswith("#"):
            lines.append(Line(None, "", text[pos : end + 1]))
            pos, lineno = end + 1, lineno + 1
            continue
        match = _LINE_START.match(line)
        if not match:
            raise GokkuError(f"{source}: line {lineno} is not KEY=VALUE")
        start = pos + match.end()
        value, after = _read_value(text, start, source, lineno)
        lineno += text.count("\n", start, after)
        lines.append(Line(match.group(1), value, text[pos:after]))
        pos = after
    return EnvFile(lines)


def _read_value(text: str, pos: int, source: str, lineno: int) -> tuple[str, int]:
    """Read one value starting at ``pos``; return it and the index after its line."""
    out: list[str] = []
    quoted = False
    while pos < len(text) and text[pos] != "\n":
        char = text[pos]
        if char == "'":
            close = text.find("'", pos + 1)
            if close < 0:
                raise GokkuError(f"{source}: unterminated quote on line {lineno}")
            out.append(text[pos + 1 : close])
            pos, quoted = close + 1, True
        elif char == '"':
            pos += 1
            while pos < len(text) and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < len(text) and text[pos + 1] in _DOUBLE_ESCAPES:
                    out.append(_DOUBLE_ESCAPES[text[pos + 1]])
                    pos += 2
                else:
                    out.append(text[pos])
                    pos += 1
            if pos >= len(text):
                raise GokkuError(f"{source}: unterminated quote on line {lineno}")
            pos, quoted = pos + 1, True
        elif char == "\\" and pos + 1 < len(text):
            out.append(text[pos + 1])
            pos += 2
        else:
            out.append(char)
            pos += 1
    value = "".join(out)
    return (value if quoted else value.rstrip()), pos + 1
