"""Reading and writing an app's ``.env`` file.

Values are written so that ``set -a; . .env`` in Bash reads back exactly what was stored:
plain values bare, anything else single-quoted (``'`` becomes ``'\\''``). The reader also
accepts what other tools write (``export KEY=...``, double quotes, bare values with spaces
as Gokku wrote them).
"""

import re

from gokku.errors import GokkuError

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_./:@%+,=-]*$")
_LINE_START = re.compile(r"^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=")
_DOUBLE_ESCAPES = {'"': '"', "\\": "\\", "$": "$", "`": "`", "\n": ""}


def quote(value: str) -> str:
    if _SAFE_VALUE.match(value):
        return value
    return "'" + value.replace("'", "'\\''") + "'"


def dumps(env: dict[str, str]) -> str:
    return "".join(f"{key}={quote(value)}\n" for key, value in env.items())


def loads(text: str, source: str = ".env") -> dict[str, str]:
    """Parse ``text``; a malformed file is an error naming the line, never silently cut."""
    env: dict[str, str] = {}
    pos, lineno = 0, 1
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        line = text[pos:end]
        if not line.strip() or line.lstrip().startswith("#"):
            pos, lineno = end + 1, lineno + 1
            continue
        match = _LINE_START.match(line)
        if not match:
            raise GokkuError(f"{source}: line {lineno} is not KEY=VALUE")
        start = pos + match.end()
        value, pos = _read_value(text, start, source, lineno)
        lineno += text.count("\n", start, pos)
        env[match.group(1)] = value
    return env


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
