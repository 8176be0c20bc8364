"""Automatic plugin updates through a real signed index served over HTTP (built with
``plugins:publish``, as in test_plugin_index): the run takes only versions out for the
cooldown, within the level and the pins; a failing ``hooks/post-update`` rolls back, with
its audit line; ``on``/``off`` are a line in this root's block of the real crontab."""

import json
import os
import subprocess
import time

import test_plugin_index
from sshkit import *  # noqa: F403 - fixtures
from test_plugin_index import Shelf, listed

from gokku import cron
from gokku.plugins import signing

# The signed HTTP index of test_plugin_index, and its publisher.
publisher = test_plugin_index.publisher
shelf = test_plugin_index.shelf
main_index = test_plugin_index.main_index

ISO = "%Y-%m-%dT%H:%M:%SZ"


def backdate(index: Shelf, name: str, hours: float, *versions: str) -> None:
    """Say in the signed manifest that these versions came out ``hours`` ago: the index's
    owner edits the manifest and signs it again with the index's key."""
    path = index.folder / f"plugins/{name}.json"
    manifest = json.loads(path.read_text())
    when = time.strftime(ISO, time.gmtime(time.time() - hours * 3600))
    for version in versions:
        manifest["versions"][version]["published"] = when
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    signing.sign(path, index.key)


def updates(gokku) -> list[dict]:
    """The audit lines of automatic updates."""
    path = gokku.root / "log/audit.log"
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [e for e in lines if e["argv"][:2] == ["plugins:auto-update", "run"]]


def installed(gokku) -> dict[str, str]:
    return {name: record["version"] for name, record in listed(gokku).items()}


def test_a_failing_post_update_hook_is_rolled_back_and_audited(gokku, main_index):
    main_index.release("demo", "1.0.0")
    gokku.ok("plugins:add", "demo", "--yes")
    main_index.release("demo", "1.1.0", files={"hooks/post-update": "echo sick >&2\nexit 3\n"})
    backdate(main_index, "demo", 72, "1.0.0", "1.1.0")

    failed = gokku("plugins:auto-update", "run")

    assert failed.code == 1, failed.stderr
    assert "Plan: upgrade demo 1.0.0 -> 1.1.0" in failed.stderr
    assert " !     rolled back: demo 1.1.0: post-update hook exited 3\n" in failed.stderr
    assert gokku.ok("demo:which").stdout == "demo 1.0.0\n"
    assert installed(gokku) == {"demo": "1.0.0"}
    [line] = updates(gokku)
    assert (line["argv"][2:], line["exit"], line["outcome"]) == (
        ["demo", "1.0.0->1.1.0"],
        3,
        "rolled back to 1.0.0: demo 1.1.0: post-update hook exited 3",
    )
    # A healthy version is taken; its hook is told what it moved from and to.
    main_index.release("demo", "1.1.1", files={"hooks/post-update": 'echo "healthy $1 $2"\n'})
    backdate(main_index, "demo", 72, "1.1.1")

    fixed = gokku.ok("plugins:auto-update", "run")

    assert "healthy 1.0.0 1.1.1" in fixed.stdout + fixed.stderr
    assert gokku.ok("demo:which").stdout == "demo 1.1.1\n"
    assert [(e["argv"][3], e["exit"], e["outcome"]) for e in updates(gokku)][1:] == [
        ("1.0.0->1.1.1", 0, "updated")
    ]


def test_a_version_that_fails_its_checks_is_not_installed_and_says_so(gokku, main_index, tmp_path):
    main_index.release("demo", "1.0.0")
    gokku.ok("plugins:add", "demo", "--yes")
    main_index.release("demo", "1.1.0")
    backdate(main_index, "demo", 72, "1.0.0", "1.1.0")
    tree = tmp_path / "src/demo-1.1.0"  # the archive served is not the one signed
    (tree / "commands/which").write_text("#!/bin/bash\necho swapped\n")
    main_index.github.publish("acme", "gokku-demo", tree, ref="v1.1.0")

    failed = gokku("plugins:auto-update", "run")

    assert failed.code == 1, failed.stderr
    assert gokku.ok("demo:which").stdout == "demo 1.0.0\n"
    [line] = updates(gokku)
    assert line["outcome"].startswith("rolled back to 1.0.0: demo 1.1.0: the sha256 fetched (")
    assert ") is not the one index main signed (" in line["outcome"]
    assert line["outcome"].endswith("): refused")


def test_a_version_inside_the_cooldown_is_not_taken(gokku, main_index):
    main_index.release("demo", "1.0.0")
    gokku.ok("plugins:add", "demo", "--yes")
    for version in ("1.0.1", "1.0.2", "1.0.3"):
        main_index.release("demo", version)
    gokku.ok("plugins:auto-update", "run")  # all just out: nothing moves, nothing fails
    assert installed(gokku) == {"demo": "1.0.0"}
    backdate(main_index, "demo", 49, "1.0.1")
    backdate(main_index, "demo", 47, "1.0.2")  # 1.0.3: published just now

    gokku.ok("plugins:auto-update", "run")
    assert installed(gokku) == {"demo": "1.0.1"}  # the default cooldown is 48 h
    gokku.ok("plugins:auto-update", "run", "--cooldown", "24")
    assert installed(gokku) == {"demo": "1.0.2"}
    gokku.ok("plugins:auto-update", "run", "--cooldown", "0")
    assert installed(gokku) == {"demo": "1.0.3"}
    assert [e["argv"][3] for e in updates(gokku)] == [
        "1.0.0->1.0.1",
        "1.0.1->1.0.2",
        "1.0.2->1.0.3",
    ]


def test_pins_and_the_level_hold(gokku, main_index):
    for name in ("base", "solo", "ranged"):
        main_index.release(name, "1.0.0")
        gokku.ok("plugins:add", name, "--yes")
    for version in ("1.0.5", "1.1.0", "2.0.0"):
        main_index.release("base", version)
    main_index.release("solo", "1.0.1")
    for version in ("1.0.2", "1.1.0"):
        main_index.release("ranged", version)
    backdate(main_index, "base", 100, "1.0.0", "1.0.5", "1.1.0", "2.0.0")
    backdate(main_index, "solo", 100, "1.0.0", "1.0.1")
    backdate(main_index, "ranged", 100, "1.0.0", "1.0.2", "1.1.0")
    gokku.ok("plugins:pin", "solo")  # at its version: stays
    gokku.ok("plugins:pin", "ranged", "~1.0")  # a range: moves within it

    try:
        gokku.ok("plugins:auto-update", "on", "--level", "patch")
        gokku.ok("plugins:auto-update", "run")  # as on saved it
    finally:
        gokku.ok("plugins:auto-update", "off")
    assert installed(gokku) == {"base": "1.0.5", "solo": "1.0.0", "ranged": "1.0.2"}
    gokku.ok("plugins:auto-update", "run")  # minor, the default
    assert installed(gokku) == {"base": "1.1.0", "solo": "1.0.0", "ranged": "1.0.2"}
    gokku.ok("plugins:unpin", "solo")
    gokku.ok("plugins:auto-update", "run")
    assert installed(gokku) == {"base": "1.1.0", "solo": "1.0.1", "ranged": "1.0.2"}
    assert gokku.ok("base:which").stdout == "base 1.1.0\n"


def crontab() -> str:
    proc = subprocess.run(["crontab", "-l"], capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""


def test_on_and_off_are_a_line_in_this_roots_block_only(gokku):
    owner = str(gokku.root.resolve())
    assert gokku.ok("plugins:auto-update").stdout == "Automatic plugin updates: off\n"
    try:
        shown = gokku.ok("plugins:auto-update", "on", "--level", "patch", "--cooldown", "12")
        [line] = cron.block_of(crontab(), owner) or []
        ours = [x for x in crontab().splitlines() if f"GOKKU_ROOT={owner} " in x]
        assert ours == [line] and " plugins:auto-update run # " in line
        expression = " ".join(line.split()[:5])
        assert shown.stdout == (
            "Automatic plugin updates: on, patch level, versions at least 12 h in their index, "
            f"daily at '{expression}' (cron)\n"
        )
        assert gokku.ok("plugins:auto-update").stdout == shown.stdout
        # The line runs, as cron runs it (sh, a bare environment): nothing to update.
        env = {"HOME": os.environ.get("HOME", "/"), "SHELL": "/bin/sh"}
        ran = subprocess.run(["sh", "-c", line.split(" ", 5)[5]], env=env, capture_output=True)
        assert ran.returncode == 0, ran.stderr
    finally:
        off = gokku.ok("plugins:auto-update", "off")
    assert off.stdout == "Automatic plugin updates: off\n"
    assert cron.block_of(crontab(), owner) is None
    assert owner not in crontab()


def test_bad_input_is_one_line_and_changes_nothing(gokku):
    before = gokku.snapshot()
    for args, said in (
        (["on", "--level", "major"], "--level is patch or minor, not 'major'"),
        (["on", "--cooldown", "soon"], "--cooldown is a number of hours (0 to 8784), not 'soon'"),
        (["off", "--level", "patch"], "--level and --cooldown go with on or run"),
        (["sometimes"], "unknown action 'sometimes'"),
    ):
        result = gokku("plugins:auto-update", *args)
        assert result.code == 2, result.stderr
        [line] = result.stderr.splitlines()
        assert line.startswith(f" !     {said}")
    assert gokku.snapshot() == before
    assert str(gokku.root.resolve()) not in crontab()
