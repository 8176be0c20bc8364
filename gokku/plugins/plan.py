"""What ``plugins:add NAME@RANGE`` installs: the plugin and everything it requires.

The resolution is greedy and checked: each plugin gets the newest index version that every
range on it allows (and that works with this Gokku), or keeps its installed version when
that already does; ranges come from the request, from the chosen versions' ``requires`` and
from the installed plugins that stay. It repeats until nothing changes. A plugin no version
satisfies is a conflict, refused naming every range and who asked for it; a chain of
requirements that comes back to where it started is a cycle, refused naming it.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gokku import __version__
from gokku.errors import GokkuError
from gokku.plugins.semver import Range, Version

ROUNDS = 50
ASKED = "you"


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
    chosen: dict[str, _Choice] = field(default_factory=dict)

    def resolve(self, wanted: dict[str, str]) -> list[Step]:
        """The steps, dependencies first, that make ``wanted`` (NAME: RANGE) installed."""
        for _ in range(ROUNDS):
            ranges = self._ranges(wanted)
            changed = False
            for name, on in ranges.items():
                current = self.chosen.get(name)
                if current is None and name in self.installed and name not in self.upgrade:
                    current = _Choice(self.installed[name].version, self.installed[name].requires)
                if current is not None and _fits(current.version, on):
                    if name not in self.chosen:
                        self.chosen[name] = current
                    continue
                self.chosen[name] = self._pick(name, on)
                changed = True
            if not changed:
                self._check_cycles()
                return self._ordered()
        raise GokkuError(f"the requirements of {', '.join(sorted(wanted))} do not settle: refused")

    def _ranges(self, wanted: dict[str, str]) -> dict[str, list[tuple[str, str]]]:
        """Every range on every plugin of the plan, with who puts it there: the request,
        the chosen versions, and the installed plugins that stay as they are."""
        ranges: dict[str, list[tuple[str, str]]] = {n: [(r, ASKED)] for n, r in wanted.items()}
        for name, choice in self.chosen.items():
            for dependency, wanted_range in choice.requires.items():
                ranges.setdefault(dependency, []).append((wanted_range, f"{name} {choice.version}"))
        for name, plugin in self.installed.items():
            if name in self.chosen or name in wanted:
                continue
            for dependency, wanted_range in plugin.requires.items():
                if dependency in ranges:
                    by = f"{name} {plugin.version}".strip()
                    ranges[dependency].append((wanted_range, by))
        return ranges

    def _pick(self, name: str, on: list[tuple[str, str]]) -> _Choice:
        said = ", ".join(f"{r} by {by}" for r, by in on)
        found = self.lookup(name)
        if found is None:
            raise GokkuError(f"{name} (required as {said}) is in no plugin index: refused")
        index, manifest = found
        allowed = [v for v in manifest["versions"] if _fits(v, on)]
        if not allowed:
            offered = ", ".join(sorted(manifest["versions"], key=Version.parse)) or "none"
            raise GokkuError(
                f"conflict: {name} is required as {said}; index {index.name} has {offered}: refused"
            )
        gokku = Version.parse(self.gokku)
        works = [v for v in allowed if _gokku_range(manifest["versions"][v]).allows(gokku)]
        if not works:
            best = max(allowed, key=Version.parse)
            needs = manifest["versions"][best].get("gokku")
            raise GokkuError(
                f"{name} {best} needs Gokku {needs}; this Gokku is {self.gokku}: refused"
            )
        version = str(max(works, key=Version.parse))
        entry = manifest["versions"][version]
        previous = self.installed[name].version if name in self.installed else None
        if (
            previous is not None
            and _fits(previous, on)
            and _version(previous) >= Version.parse(version)
        ):
            return _Choice(previous, self.installed[name].requires)  # never an upgrade down
        step = Step(name, version, previous, index, entry)
        return _Choice(version, dict(entry.get("requires") or {}), step)

    def _check_cycles(self) -> None:
        state: dict[str, str] = {}

        def visit(name: str, path: list[str]) -> None:
            if state.get(name) == "done" or name not in self.chosen:
                return
            if state.get(name) == "open":
                loop = path[path.index(name) :] + [name]
                shown = ", ".join(
                    f"{a} requires {b} {self.chosen[a].requires[b]}"
                    for a, b in zip(loop, loop[1:], strict=False)
                )
                raise GokkuError(f"dependency cycle: {shown}: refused")
            state[name] = "open"
            for dependency in self.chosen[name].requires:
                visit(dependency, [*path, name])
            state[name] = "done"

        for name in sorted(self.chosen):
            visit(name, [])

    def _ordered(self) -> list[Step]:
        """The steps with each plugin after what it requires (no cycles remain)."""
        done: list[str] = []

        def place(name: str) -> None:
            if name in done or name not in self.chosen:
                return
            for dependency in sorted(self.chosen[name].requires):
                place(dependency)
            done.append(name)

        for name in sorted(self.chosen):
            place(name)
        return [step for n in done if (step := self.chosen[n].step) is not None]


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
