"""Semantic versions and the ranges plugins use to name the versions they work with.

Versions are ``MAJOR.MINOR.PATCH`` with an optional ``-prerelease``. Ranges follow npm's
common forms: ``1.2.3`` (exactly), ``^1.2`` (compatible: below the next major, or below
the next minor while the major is 0), ``~1.2.3`` (below the next minor), ``1.x``/``1``
(any 1.*), ``*`` (any), comparators joined by spaces (``>=1.0 <2``: all must hold) and
alternatives joined by ``||``. A pre-release matches only a range that names one: ``^1``
never upgrades anyone to ``2.0.0-rc.1``.
"""

import operator
import re
from collections.abc import Callable, Iterable
from typing import NamedTuple

from gokku.errors import GokkuError

_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?$")
_PARTIAL = re.compile(r"^(\d+|[xX*])(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?$")
_COMPARATOR = re.compile(r"^(>=|<=|>|<|=|\^|~)?\s*(.*)$")
_OPS: dict[str, Callable[[object, object], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "=": operator.eq,
}


class Version(NamedTuple):
    """A semantic version; pre-releases order before their release."""

    major: int
    minor: int
    patch: int
    pre: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "Version":
        match = _VERSION.match(str(text).strip())
        if not match:
            raise GokkuError(f"{text!r} is not a version (MAJOR.MINOR.PATCH, like 1.2.3)")
        pre = tuple(match[4].split(".")) if match[4] else ()
        return cls(int(match[1]), int(match[2]), int(match[3]), pre)

    def _key(self) -> tuple:
        # A release sorts after its pre-releases; numeric identifiers before alphanumeric.
        pre = [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in self.pre]
        return (self.major, self.minor, self.patch, not self.pre, pre)

    def __lt__(self, other: "Version") -> bool:
        return self._key() < other._key()

    def __le__(self, other: "Version") -> bool:
        return self._key() <= other._key()

    def __gt__(self, other: "Version") -> bool:
        return self._key() > other._key()

    def __ge__(self, other: "Version") -> bool:
        return self._key() >= other._key()

    def __str__(self) -> str:
        core = f"{self.major}.{self.minor}.{self.patch}"
        return f"{core}-{'.'.join(self.pre)}" if self.pre else core


Comparator = tuple[str, Version]


class Range(NamedTuple):
    """A version range as a plugin's requirements and pins write it (``^1.2``, ``~3.0``)."""

    text: str
    alternatives: tuple[tuple[Comparator, ...], ...]

    @classmethod
    def parse(cls, text: str) -> "Range":
        text = str(text).strip()
        alternatives = []
        for part in text.split("||"):
            words = _join_operators(part.split())
            if not words:
                words = ["*"]
            comparators: list[Comparator] = []
            for word in words:
                comparators += _comparators(word, text)
            alternatives.append(tuple(comparators))
        return cls(text or "*", tuple(alternatives))

    def allows(self, version: Version) -> bool:
        return any(_holds(version, comparators) for comparators in self.alternatives)

    def best(self, versions: Iterable[Version]) -> Version | None:
        """The highest of ``versions`` the range allows."""
        return max((v for v in versions if self.allows(v)), default=None)

    def __str__(self) -> str:
        return self.text


def allows(range_text: str, version_text: str) -> bool:
    return Range.parse(range_text).allows(Version.parse(version_text))


def _join_operators(words: list[str]) -> list[str]:
    """``>= 1.0`` is ``>=1.0``: an operator alone takes the word after it."""
    joined: list[str] = []
    for word in words:
        if joined and joined[-1] in (">=", "<=", ">", "<", "=", "^", "~"):
            joined[-1] += word
        else:
            joined.append(word)
    return joined


def _holds(version: Version, comparators: tuple[Comparator, ...]) -> bool:
    if not all(_OPS[op](version, bound) for op, bound in comparators):
        return False
    if not version.pre:
        return True
    core = (version.major, version.minor, version.patch)
    return any(b.pre and (b.major, b.minor, b.patch) == core for _, b in comparators)


def _comparators(word: str, whole: str) -> list[Comparator]:
    match = _COMPARATOR.match(word)
    op, rest = (match[1] or "", match[2]) if match else ("", "")
    partial = _PARTIAL.match(rest)
    if not partial:
        raise GokkuError(f"{whole!r} is not a version range (like ^1.2, ~1.2.3, >=1.0 <2, 1.x)")
    numbers = [None if p is None or p in "xX*" else int(p) for p in partial.groups()[:3]]
    pre = tuple(partial[4].split(".")) if partial[4] else ()
    given = next((i for i, n in enumerate(numbers) if n is None), 3)
    if any(n is not None for n in numbers[given:]):
        raise GokkuError(f"{whole!r} is not a version range (a wildcard must come last)")
    major, minor, patch = (n or 0 for n in numbers)
    low = Version(major, minor, patch, pre)
    if given == 0:
        return [] if op in ("", "=", ">=", "<=", "^", "~") else [("<", Version(0, 0, 0))]
    if op == "^":
        place = next((i for i, n in enumerate((major, minor, patch)) if n), given - 1)
        return [(">=", low), ("<", _bump(low, min(place, given - 1)))]
    if op == "~":
        return [(">=", low), ("<", _bump(low, min(1, given - 1)))]
    if given == 3:
        return [(op or "=", low)]
    upper = _bump(low, given - 1)  # 1.2 stands for 1.2.*: the next one up is 1.3.0
    return {
        "": [(">=", low), ("<", upper)],
        "=": [(">=", low), ("<", upper)],
        ">=": [(">=", low)],
        ">": [(">=", upper)],
        "<": [("<", low)],
        "<=": [("<", upper)],
    }[op]


def _bump(version: Version, place: int) -> Version:
    """The first version after every one that shares ``version``'s first ``place + 1`` parts."""
    parts = [version.major, version.minor, version.patch][: place + 1]
    parts[-1] += 1
    parts += [0] * (3 - len(parts))
    return Version(*parts)
