"""Automatic plugin updates: whether they are on (``plugin-auto-update.json``), the cron
line that runs them (a line of this root's block, rendered by ``gokku.schedules``), and
which index versions a run may take.

A run takes a version only when it is within the level asked (``patch``: the same
MAJOR.MINOR as the installed one; ``minor``: the same MAJOR) and has been in the index at
least the cooldown (its signed ``published`` time): a version pulled back within days of
its release never reaches a server that waits. A version without a published time is
never old enough. The installed version always stays a choice, so that nothing newer
eligible means "stay", never a conflict.
"""

import hashlib
import time
from calendar import timegm
from typing import Any

from gokku.errors import GokkuError, UsageError
from gokku.paths import Root
from gokku.plugins import plan
from gokku.plugins.semver import Version
from gokku.storage import read_json, write_json

STATE = "plugin-auto-update.json"
LEVELS = ("patch", "minor")
DEFAULT_LEVEL = "minor"
DEFAULT_COOLDOWN_HOURS = 48.0
MAX_COOLDOWN_HOURS = 24 * 366
VERB = ["plugins:auto-update", "run"]
ISO = "%Y-%m-%dT%H:%M:%SZ"


def load(root: Root) -> dict[str, Any] | None:
    """The settings when automatic updates are on; None when they are off."""
    path = root.path / STATE
    data = read_json(path) if path.is_file() else None
    if data is not None and not (isinstance(data, dict) and data.get("level") in LEVELS):
        raise GokkuError(f"{path} is not a record of automatic updates: turn them off and on")
    return data


def turn_on(root: Root, level: str, cooldown_hours: float) -> dict[str, Any]:
    """Write the settings; the caller renders the crontab (``schedules.render``)."""
    state = {"level": level, "cooldown_hours": cooldown_hours, "cron": daily(root)}
    write_json(root.path / STATE, state)
    return state


def turn_off(root: Root) -> bool:
    """Whether they were on."""
    path = root.path / STATE
    if not path.is_file():
        return False
    path.unlink()
    return True


def daily(root: Root) -> str:
    """Once a day, at a time taken from the root's path: servers that share one index do
    not all fetch it in the same minute."""
    spread = int.from_bytes(hashlib.sha256(str(root.path.resolve()).encode()).digest()[:4])
    return f"{spread % 60} {spread // 60 % 24} * * *"


def cron_lines(root: Root) -> list[str]:
    """This root's line for automatic updates, none when they are off."""
    from gokku import schedules

    state = load(root)
    if state is None:
        return []
    return [schedules.cron_line(root, state["cron"], VERB, f"plugin updates ({state['level']})")]


def check_level(text: str) -> str:
    if text not in LEVELS:
        raise UsageError(f"--level is patch or minor, not {text[:32]!r}")
    return text


def check_cooldown(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        hours = -1.0
    if not 0 <= hours <= MAX_COOLDOWN_HOURS:
        most = MAX_COOLDOWN_HOURS
        raise UsageError(f"--cooldown is a number of hours (0 to {most}), not {text[:32]!r}")
    return hours


def within(level: str, installed: str, candidate: str) -> bool:
    """Whether ``candidate`` is within ``level`` of the installed version."""
    try:
        have, new = Version.parse(installed), Version.parse(candidate)
    except GokkuError:
        return False  # an installed plugin without a version is never moved automatically
    if level == "patch":
        return (have.major, have.minor) == (new.major, new.minor)
    return have.major == new.major


def aged(entry: dict[str, Any], cutoff: float) -> bool:
    """Whether the version was published at or before ``cutoff`` (seconds since the epoch)."""
    try:
        published = timegm(time.strptime(str(entry.get("published") or ""), ISO))
    except ValueError:
        return False
    return published <= cutoff


def eligible(
    lookup: plan.Lookup, installed: dict[str, plan.Installed], level: str, cutoff: float
) -> plan.Lookup:
    """``lookup`` with only the versions a run may take, the installed ones kept."""

    def filtered(name: str) -> tuple[Any, dict[str, Any]] | None:
        found = lookup(name)
        if found is None:
            return None
        source, manifest = found
        have = installed[name].version if name in installed else None
        versions = {
            number: entry
            for number, entry in manifest["versions"].items()
            if number == have
            or (aged(entry, cutoff) and (have is None or within(level, have, number)))
        }
        return source, {**manifest, "versions": versions}

    return filtered
