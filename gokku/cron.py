"""Cron expressions as Debian's cron reads them, and the one block of a user's crontab that
a state root owns.

A schedule is refused here, with one line, when cron would refuse it or when it would
never run; ``Cron.previous`` says when it last should have run, which is how ``doctor``
tells a schedule that stopped (cron not running, the line gone) from one not yet due.

Several state roots may belong to one user, and tests run side by side: each root
rewrites only the lines between its own markers, read and written under a lock that
every Gokku of that user on this host takes (``crontab_lock``).
"""

import contextlib
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from gokku.errors import GokkuError, UsageError
from gokku.storage import lock

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (name, lowest, highest, names from lowest on)
FIELDS = (
    ("minute", 0, 59, None),
    ("hour", 0, 23, None),
    ("day of month", 1, 31, None),
    ("month", 1, 12, MONTHS),
    ("day of week", 0, 7, DAYS),  # 7 is Sunday too
)
SHORTHANDS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# The longest a valid expression can go without running: 29 February, on a given weekday.
LOOKBACK_DAYS = 366 * 28
_ITEM = re.compile(r"(\*|[a-z0-9]+(?:-[a-z0-9]+)?)(?:/([0-9]+))?")


@dataclass(frozen=True)
class Cron:
    """A parsed expression: the values each field matches, and whether day of month and
    day of week were given as ``*...`` (cron runs on either day when neither is)."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    def runs_on(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def previous(self, at: datetime) -> datetime | None:
        """The last minute at or before ``at`` (local time, as cron reads the fields) at
        which this runs; None when it never did in the longest possible gap."""
        at = at.replace(second=0, microsecond=0)
        day = at.replace(hour=0, minute=0)
        for _ in range(LOOKBACK_DAYS):
            if self.runs_on(day):
                for hour in sorted(self.hours, reverse=True):
                    for minute in sorted(self.minutes, reverse=True):
                        when = day.replace(hour=hour, minute=minute)
                        if when <= at:
                            return when
            day -= timedelta(days=1)
        return None


def parse(text: str) -> Cron:
    """The expression, or a UsageError saying what is wrong with it in one line."""
    spelled = " ".join(text.split()).lower()
    if spelled == "@reboot":
        raise UsageError("bad cron expression '@reboot': a backup schedule needs a period")
    words = SHORTHANDS.get(spelled, spelled).split(" ")
    if spelled.startswith("@") and spelled not in SHORTHANDS:
        known = ", ".join(SHORTHANDS)
        raise UsageError(f"bad cron expression {text!r}: unknown {spelled}; use one of {known}")
    if len(words) != 5:
        raise UsageError(
            f"bad cron expression {text!r}: it needs 5 fields (minute hour day-of-month "
            f"month day-of-week), not {len(words)}"
        )
    values = [_field(text, word, *spec) for word, spec in zip(words, FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in values[4])
    cron = Cron(
        text=" ".join(words),
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        any_day=words[2].startswith("*"),
        any_weekday=words[4].startswith("*"),
    )
    if cron.previous(datetime(2100, 1, 1)) is None:
        raise UsageError(f"bad cron expression {text!r}: no date matches it, it would never run")
    return cron


def _field(
    text: str, word: str, name: str, low: int, high: int, names: list[str] | None
) -> frozenset[int]:
    found: set[int] = set()
    for item in word.split(","):
        match = _ITEM.fullmatch(item)
        if match is None:
            raise UsageError(f"bad cron expression {text!r}: {name} {item!r} is not understood")
        span, step_text = match.groups()
        if span == "*":
            first, last = low, high
        else:
            ends = [_number(text, end, name, low, high, names) for end in span.split("-")]
            first, last = ends[0], ends[-1]
            if first > last:
                raise UsageError(
                    f"bad cron expression {text!r}: {name} range {span} runs backwards"
                )
            if step_text is not None and len(ends) == 1:
                raise UsageError(
                    f"bad cron expression {text!r}: {name} {item!r}: a step needs * or a range"
                )
        step = int(step_text) if step_text is not None else 1
        if not 1 <= step <= high - low + 1:
            raise UsageError(
                f"bad cron expression {text!r}: {name} step {step_text} is out of range"
            )
        found.update(range(first, last + 1, step))
    return frozenset(found)


def _number(text: str, word: str, name: str, low: int, high: int, names: list[str] | None) -> int:
    if names is not None and word in names:
        return names.index(word) + low
    if not (word.isascii() and word.isdigit()):
        raise UsageError(f"bad cron expression {text!r}: {name} {word!r} is not understood")
    value = int(word)
    if not low <= value <= high:
        raise UsageError(
            f"bad cron expression {text!r}: {name} {value} is out of range {low}-{high}"
        )
    return value


# ---- The crontab ----------------------------------------------------------------------


def begin_marker(owner: str) -> str:
    return f"# BEGIN gokku {owner}: rendered from its schedules; change them with gokku"


def end_marker(owner: str) -> str:
    return f"# END gokku {owner}"


def user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@contextlib.contextmanager
def crontab_lock() -> Iterator[None]:
    """This user's crontab is read and rewritten under one lock on the host, whichever
    state root asks: a directory in /tmp named for the user, made by and for that user
    alone (one left there by someone else is refused, not used)."""
    folder = Path("/tmp") / f"gokku-crontab-{user()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    info = folder.lstat()
    if not folder.is_dir() or folder.is_symlink() or info.st_uid != os.geteuid():
        raise GokkuError(f"{folder} is not this user's own directory: remove it and try again")
    with lock(folder, "crontab", holder="crontab"):
        yield


def installed() -> bool:
    return shutil.which("crontab") is not None


def _crontab() -> str:
    found = shutil.which("crontab")
    if found is None:
        raise GokkuError("cron is not installed (no crontab command): install the cron package")
    return found


def read_crontab() -> str:
    """This user's crontab, empty when there is none."""
    proc = subprocess.run([_crontab(), "-l"], capture_output=True, text=True)
    if proc.returncode != 0:
        if "no crontab for" in proc.stderr:
            return ""
        raise GokkuError(f"crontab -l failed: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def write_crontab(text: str) -> None:
    proc = subprocess.run([_crontab(), "-"], input=text, capture_output=True, text=True)
    if proc.returncode != 0:
        raise GokkuError(f"crontab refused the new table: {proc.stderr.strip()}")


def block_of(text: str, owner: str) -> list[str] | None:
    """The lines between OWNER's markers (None: there is no block)."""
    lines = text.splitlines()
    begin = begin_marker(owner)
    if begin not in lines:
        return None
    start = lines.index(begin) + 1
    end = end_marker(owner)
    if end not in lines[start:]:
        raise GokkuError(
            f"the crontab of {user()} has gokku's marker for {owner} without its end "
            f"({end!r}): fix it with crontab -e"
        )
    return lines[start : lines.index(end, start)]


def with_block(text: str, owner: str, lines: list[str]) -> str:
    """TEXT with OWNER's block replaced by LINES (where it was, else at the end); no
    block at all when LINES is empty. Every other line is kept as it was."""
    current = text.splitlines()
    block = [begin_marker(owner), *lines, end_marker(owner)] if lines else []
    if block_of(text, owner) is None:
        result = current + block
    else:
        start = current.index(begin_marker(owner))
        end = current.index(end_marker(owner), start)
        result = current[:start] + block + current[end + 1 :]
    return "".join(f"{line}\n" for line in result)
