"""What ``plugins:add NAME@RANGE`` installs: the plugin and everything it requires.

The resolution is depth-first: each plugin gets the newest index version that every range
on it allows (and that works with this Gokku), or keeps its installed version when that
already does; ranges come from the request, from the chosen versions' ``requires`` and
from the installed plugins that stay. When a choice leads to a plugin no version
satisfies, the next older version of that choice is tried, and so on back up: plans are
small. A set no choice can satisfy is a conflict, refused naming every range on the
plugin that could not be placed first, and who asked for it; a chain of requirements
that comes back to where it started is a cycle, refused naming it.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gokku import __version__
from gokku.errors import GokkuError
from gokku.plugins.semver import Range, Version

ROUNDS = 50  # choices deep
TRIES = 500  # choices tried in all: past that, the requirements do not settle
ASKED = "you"


class Conflict(GokkuError):
    """No version fits a plugin, given the choices made so far: an older version of one of
    those choices may do."""


@dataclass(frozen=True)
class Installed:
    version: str
    requires: dict[str, str]


@dataclass(frozen=True)
class Step:
    """One plugin the plan installs or changes, with the index entry of its new version."""

    name: str
    version: str
    previous: str | None  # the installed version, None for a new install
    index: Any  # gokku.plugins.index.Index
    entry: dict[str, Any]

    def describe(self) -> str:
        if self.previous is None:
            return f"install {self.name} {self.version}"
        verb = "upgrade" if Version.parse(self.version) > _version(self.previous) else "change"
        return f"{verb} {self.name} {self.previous} -> {self.version}"


@dataclass
class _Choice:
    version: str
    requires: dict[str, str]
    step: Step | None = None  # None: the installed version stays


Lookup = Callable[[str], tuple[Any, dict[str, Any]] | None]


@dataclass
class Resolver:
    installed: dict[str, Installed]
    lookup: Lookup  # (index, manifest) of a plugin, or None
    gokku: str = __version__
    upgrade: frozenset[str] = frozenset()  # move these to their newest allowed version
    tries: int = 0

    def resolve(self, wanted: dict[str, str]) -> list[Step]:
        """The steps, dependencies first, that make ``wanted`` (NAME: RANGE) installed."""
        self.tries = 0
        chosen = self._settle(wanted, {}, 0)
        self._check_cycles(chosen)
        return self._ordered(chosen)

    def _settle(
        self, wanted: dict[str, str], chosen: dict[str, _Choice], depth: int
    ) -> dict[str, _Choice]:
        """``chosen`` completed: every plugin of the plan with a version every range on it
        allows. A plugin that needs a (new) version branches on its candidates."""
        self.tries += 1
        if depth > ROUNDS or self.tries > TRIES:
            names = ", ".join(sorted(wanted))
            raise GokkuError(f"the requirements of {names} do not settle: refused")
        chosen = dict(chosen)
        while True:
            stays = {}
            for name, on in self._ranges(wanted, chosen).items():
                current = chosen.get(name) or self._staying(name)
                if current is not None and _fits(current.version, on):
                    if name not in chosen:
                        stays[name] = current
                    continue
                return self._branch(wanted, chosen, name, on, depth)
            if not stays:
                return chosen
            chosen.update(stays)  # what they require counts from now on

    def _branch(
        self,
        wanted: dict[str, str],
        chosen: dict[str, _Choice],
        name: str,
        on: list[tuple[str, str]],
        depth: int,
    ) -> dict[str, _Choice]:
        """The first candidate of ``name``, newest first, with which the rest settles; the
        failure of the newest when none does."""
        failures = []
        for choice in self._candidates(name, on):  # never empty: it raises instead
            try:
                return self._settle(wanted, {**chosen, name: choice}, depth + 1)
            except Conflict as exc:
                failures.append(exc)
        raise failures[0]

    def _staying(self, name: str) -> _Choice | None:
        """The installed version, when the plan leaves it where it is unless it must move."""
        if name in self.installed and name not in self.upgrade:
            return _Choice(self.installed[name].version, self.installed[name].requires)
        return None

    def _ranges(
        self, wanted: dict[str, str], chosen: dict[str, _Choice]
    ) -> dict[str, list[tuple[str, str]]]:
        """Every range on every plugin of the plan, with who puts it there: the request,
        the chosen versions, and the installed plugins that stay as they are."""
        ranges: dict[str, list[tuple[str, str]]] = {n: [(r, ASKED)] for n, r in wanted.items()}
        for name, choice in chosen.items():
            for dependency, wanted_range in choice.requires.items():
                ranges.setdefault(dependency, []).append((wanted_range, f"{name} {choice.version}"))
        for name, plugin in self.installed.items():
            if name in chosen or name in wanted:
                continue
            for dependency, wanted_range in plugin.requires.items():
                if dependency in ranges:
                    by = f"{name} {plugin.version}".strip()
                    ranges[dependency].append((wanted_range, by))
        return ranges

    def _candidates(self, name: str, on: list[tuple[str, str]]) -> list[_Choice]:
        """The versions of ``name`` the ranges allow that work with this Gokku, newest
        first; an installed version that fits ends the list (never an upgrade down)."""
        said = ", ".join(f"{r} by {by}" for r, by in on)
        found = self.lookup(name)
        if found is None:
            raise Conflict(f"{name} (required as {said}) is in no plugin index: refused")
        index, manifest = found
        allowed = [v for v in manifest["versions"] if _fits(v, on)]
        if not allowed:
            offered = ", ".join(sorted(manifest["versions"], key=Version.parse)) or "none"
            raise Conflict(
                f"conflict: {name} is required as {said}; index {index.name} has {offered}: refused"
            )
        gokku = Version.parse(self.gokku)
        works = [v for v in allowed if _gokku_range(manifest["versions"][v]).allows(gokku)]
        if not works:
            best = max(allowed, key=Version.parse)
            needs = manifest["versions"][best].get("gokku")
            raise Conflict(
                f"{name} {best} needs Gokku {needs}; this Gokku is {self.gokku}: refused"
            )
        previous = self.installed[name].version if name in self.installed else None
        kept = previous is not None and _fits(previous, on)
        choices = []
        for version in sorted(works, key=Version.parse, reverse=True):
            if kept and Version.parse(version) <= _version(str(previous)):
                break
            entry = manifest["versions"][version]
            step = Step(name, str(version), previous, index, entry)
            choices.append(_Choice(str(version), dict(entry.get("requires") or {}), step))
        if kept:
            choices.append(_Choice(str(previous), self.installed[name].requires))
        return choices

    def _check_cycles(self, chosen: dict[str, _Choice]) -> None:
        state: dict[str, str] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == "done" or name not in chosen:
                return
            if state.get(name) == "open":
                loop = path[path.index(name) :] + [name]
                shown = ", ".join(
                    f"{a} requires {b} {chosen[a].requires[b]}"
                    for a, b in zip(loop, loop[1:], strict=False)
                )
                raise GokkuError(f"dependency cycle: {shown}: refused")
            state[name] = "open"
            for dependency in chosen[name].requires:
                visit(dependency, [*path, name])
            state[name] = "done"

        for name in sorted(chosen):
            visit(name, [])

    def _ordered(self, chosen: dict[str, _Choice]) -> list[Step]:
        """The steps with each plugin after what it requires (no cycles remain)."""
        done: list[str] = []

        def place(name: str) -> None:
            if name in done or name not in chosen:
                return
            for dependency in sorted(chosen[name].requires):
                place(dependency)
            done.append(name)

        for name in sorted(chosen):
            place(name)
        return [step for n in done if (step := chosen[n].step) is not None]


def _gokku_range(entry: dict[str, Any]) -> Range:
    return Range.parse(entry.get("gokku") or "*")


def _version(text: str) -> Version:
    try:
        return Version.parse(text)
    except GokkuError:
        return Version(0, 0, 0)


def _fits(version: str, on: list[tuple[str, str]]) -> bool:
    try:
        parsed = Version.parse(version)
    except GokkuError:
        return False  # an installed plugin without a version satisfies no range
    return all(Range.parse(r).allows(parsed) for r, _ in on)
