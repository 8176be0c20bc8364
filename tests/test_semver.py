"""Versions and ranges (``gokku.plugins.semver``): the forms plugin.yml and plugins:add use."""

import pytest

from gokku.errors import GokkuError
from gokku.plugins.semver import Range, Version, allows

CASES = [
    # range, allowed, refused
    ("1.2.3", ["1.2.3"], ["1.2.4", "1.2.2", "1.2.3-rc.1"]),
    ("=1.2.3", ["1.2.3"], ["1.2.4"]),
    ("^1.2", ["1.2.0", "1.9.9"], ["1.1.9", "2.0.0", "2.0.0-rc.1"]),
    ("^1.2.3", ["1.2.3", "1.3.0"], ["1.2.2", "2.0.0"]),
    ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
    ("^0.0.3", ["0.0.3"], ["0.0.4"]),
    ("^1", ["1.0.0", "1.5.0"], ["2.0.0", "0.9.9"]),
    ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
    ("~1.2", ["1.2.0", "1.2.9"], ["1.3.0"]),
    ("~1", ["1.9.0"], ["2.0.0"]),
    (">=1.0 <2", ["1.0.0", "1.99.0"], ["0.9.0", "2.0.0"]),
    (">= 1.0 < 2", ["1.0.0"], ["2.0.0"]),
    (">1.2", ["1.3.0"], ["1.2.9"]),
    (">1.2.3", ["1.2.4"], ["1.2.3"]),
    ("<=1.2", ["1.2.9"], ["1.3.0"]),
    ("<1.2.3", ["1.2.2"], ["1.2.3"]),
    ("1.x", ["1.0.0", "1.9.9"], ["2.0.0", "0.1.0"]),
    ("1.2.x", ["1.2.7"], ["1.3.0"]),
    ("1", ["1.4.0"], ["2.0.0"]),
    ("*", ["0.0.1", "9.9.9"], ["1.0.0-beta"]),
    ("", ["3.0.0"], []),
    ("^1 || ^3", ["1.1.0", "3.2.0"], ["2.0.0"]),
    (">=1.0.0-rc.1 <2", ["1.0.0-rc.2", "1.0.0", "1.5.0"], ["1.0.0-alpha", "1.5.0-rc.1"]),
]


@pytest.mark.parametrize(("text", "allowed", "refused"), CASES)
def test_ranges_allow_what_they_say(text, allowed, refused):
    parsed = Range.parse(text)
    assert [v for v in allowed if not parsed.allows(Version.parse(v))] == []
    assert [v for v in refused if parsed.allows(Version.parse(v))] == []


def test_versions_order_as_semver_says():
    order = [
        "0.9.0",
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.10.0",
        "2.0.0",
    ]
    assert sorted(order, key=Version.parse) == order
    assert str(Version.parse("1.0.0-rc.1")) == "1.0.0-rc.1"


def test_best_is_the_highest_allowed():
    versions = [Version.parse(v) for v in ["1.0.0", "1.4.2", "2.0.0", "1.5.0-rc.1"]]
    assert str(Range.parse("^1").best(versions)) == "1.4.2"
    assert Range.parse("^3").best(versions) is None
    assert allows("~1.4", "1.4.2") and not allows("~1.4", "1.5.0")


@pytest.mark.parametrize("text", ["1.2", "v1.2.3", "01.2.3", "1.2.3.4", "", "x"])
def test_bad_versions_are_refused(text):
    with pytest.raises(GokkuError, match="is not a version"):
        Version.parse(text)


@pytest.mark.parametrize("text", ["^", ">=abc", "1.x.3", "~>1.2", "1.2.3.4", "^1.2 >= "])
def test_bad_ranges_are_refused(text):
    with pytest.raises(GokkuError, match="is not a version range"):
        Range.parse(text)
