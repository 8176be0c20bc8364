"""Argument parsing for built-in verbs.

argparse prints to the process's own stderr and exits; over SSH the streams belong to the
request, so this small parser raises ``UsageError`` instead and leaves output to the
dispatcher. Options may appear anywhere (``-a api KEY=V`` or ``KEY=V -a api``); ``--``
ends them.
"""

from collections.abc import Callable
from typing import BinaryIO, NamedTuple

from gokku.errors import UsageError


class Parsed(NamedTuple):
    """A command line split into its positional words and its options (``parse``)."""

    positional: list[str]
    options: dict[str, str | bool | None]

    def get(self, name: str, default: str | None = None) -> str | None:
        value = self.options.get(name)
        return default if value is None else str(value)

    def flag(self, name: str) -> bool:
        return bool(self.options.get(name))


def is_number(word: str) -> bool:
    """Whether ``word`` is a number in ASCII digits: ``str.isdigit`` also takes ``²`` and
    other scripts' digits, which ``int`` then refuses or reads as another number."""
    return word.isascii() and word.isdigit()


def parse(
    args: list[str],
    usage: str,
    values: dict[str, str] | None = None,
    flags: dict[str, str] | None = None,
    min_args: int = 0,
    max_args: int | None = None,
) -> Parsed:
    """Split ``args`` into positionals and options.

    ``values`` maps spellings of options that take a value to their key
    (``{"-a": "app", "--app": "app"}``); ``flags`` does the same for boolean flags.
    """
    values = values or {}
    flags = flags or {}
    parsed = Parsed([], {key: None for key in (*values.values(), *flags.values())})
    items = iter(args)
    for arg in items:
        if arg == "--":
            parsed.positional.extend(items)
            break
        name, eq, inline = arg.partition("=")
        if name in values:
            value = inline if eq else next(items, None)
            if value is None:
                raise UsageError(f"option {name} needs a value; usage: {usage}")
            parsed.options[values[name]] = value
        elif arg in flags:
            parsed.options[flags[arg]] = True
        elif arg.startswith("-") and len(arg) > 1 and not arg[1].isdigit():
            raise UsageError(f"unknown option {arg}; usage: {usage}")
        else:
            parsed.positional.append(arg)
    count = len(parsed.positional)
    if count < min_args:
        raise UsageError(f"missing argument; usage: {usage}")
    if max_args is not None and count > max_args:
        extra = parsed.positional[max_args]
        raise UsageError(f"unexpected argument {extra!r}; usage: {usage}")
    return parsed


def assignments(items: list[str], usage: str, check: Callable[[str], str] = str) -> dict[str, str]:
    """``KEY=VALUE`` words to a dict; the value is everything after the first ``=``."""
    values = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"expected KEY=VALUE, got {item!r}; usage: {usage}")
        values[check(key)] = _text(key, value)
    return values


def _text(key: str, value: str) -> str:
    """``value`` when it is text: a word may hold bytes that are not UTF-8 (a command line,
    or a command through the OpenSSH door, as the client sent it); values are kept in
    UTF-8 files, and are refused as ``--stdin`` refuses them."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise UsageError(f"the value of {key} is not UTF-8 text; nothing was changed") from None
    return value


MAX_STDIN_ASSIGNMENTS = 1 << 20


def stdin_assignments(
    stream: BinaryIO, usage: str, check: Callable[[str], str] = str
) -> dict[str, str]:
    """``KEY=VALUE`` records, each ending in a NUL byte, from stdin (``--stdin``).

    The helpers pass secrets this way: a value on a command line is visible to every
    local user in ``ps``; stdin is not. NUL ends a record because no value contains one.
    """
    data = stream.read(MAX_STDIN_ASSIGNMENTS + 1)
    if len(data) > MAX_STDIN_ASSIGNMENTS:
        raise UsageError(f"--stdin takes at most {MAX_STDIN_ASSIGNMENTS >> 20} MiB of values")
    records = data.split(b"\0")
    if records[-1]:
        raise UsageError("--stdin: end every KEY=VALUE with a NUL byte (printf '%s\\0' ...)")
    try:
        items = [record.decode("utf-8") for record in records[:-1]]
    except UnicodeDecodeError:
        raise UsageError("--stdin: values must be UTF-8 text") from None
    if not items:
        raise UsageError(f"--stdin: no KEY=VALUE given; usage: {usage}")
    return assignments(items, usage, check)
