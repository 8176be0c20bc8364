"""Nothing half-done: commands racing each other, and commands killed with SIGKILL at each
of their write points, leave state that is consistent or that the next command finishes
or undoes.

The kills are exact: strace stops the CLI with SIGKILL on entering its Nth rename (every
write is a temp file renamed into place), so each write point is hit, not a random one."""

import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, Gokku, write_plugin

RENAMES = "rename,renameat,renameat2"

pytestmark = pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")


def killed_at_write(gokku: Gokku, n: int, *args: str) -> int:
    """Run ``gokku ARGS`` and SIGKILL it as it enters its Nth rename; its exit code."""
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={RENAMES}",
         "-e", f"inject={RENAMES}:signal=SIGKILL:when={n}",
         sys.executable, "-m", "gokku", *args],
        env=gokku.env, cwd=REPO, capture_output=True, timeout=120,
    )  # fmt: skip
    return proc.returncode


def writes_of(gokku: Gokku, *args: str) -> int:
    """How many renames (write points) ``gokku ARGS`` itself makes when it runs to the end
    (strace counts each process's own; the helpers a plugin script calls are others)."""
    trace = gokku.root.parent / "trace"
    subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), "-e", f"trace={RENAMES}",
         sys.executable, "-m", "gokku", *args],
        env=gokku.env, cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    lines = [line.split(None, 1) for line in trace.read_text().splitlines() if "rename" in line]
    return sum(1 for pid, _ in lines if pid == lines[0][0])


@pytest.fixture
def exporter(gokku: Gokku, tmp_path: Path) -> Gokku:
    """A plugin whose services give apps one variable, URL; an app 'api'."""
    install = 'set_service_env "$1" URL "x://$1"\n'
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "src" / "x", install=install)))
    gokku.ok("apps:create", "api")
    return gokku


def env_of(gokku: Gokku, app: str = "api") -> dict[str, str]:
    return json.loads(gokku.ok("config:list", "-a", app, "--format", "json").stdout)


def links_of(gokku: Gokku, service: str) -> list[dict]:
    return json.loads((gokku.root / "services" / service / "config.json").read_text())["links"]


def test_a_link_killed_at_any_write_is_finished_or_undone(exporter: Gokku) -> None:
    gokku = exporter
    gokku.ok("services:create", "x", "--name", "probe")
    points = writes_of(gokku, "services:link", "probe", "-a", "api")
    gokku.ok("services:unlink", "probe", "-a", "api")
    assert points == 3  # the record (pending), the .env, the record (done)
    for n in range(1, points + 1):
        name = f"s{n}"
        gokku.ok("services:create", "x", "--name", name)
        assert killed_at_write(gokku, n, "services:link", name, "-a", "api") == -9
        # Undo: unlink takes away whatever the cut-off link may have written.
        undone = gokku("services:unlink", name, "-a", "api")
        assert undone.code == (1 if n == 1 else 0), (n, undone.stderr)
        assert "URL" not in env_of(gokku) and links_of(gokku, name) == []
        # Or finish: linking again after another cut-off link works.
        assert killed_at_write(gokku, n, "services:link", name, "-a", "api") == -9
        gokku.ok("services:link", name, "-a", "api")
        assert env_of(gokku)["URL"] == f"x://{name}"
        assert [(x["keys"], "pending" in x) for x in links_of(gokku, name)] == [(["URL"], False)]
        gokku.ok("services:destroy", name, "--force")
        assert "URL" not in env_of(gokku)


def test_a_promote_killed_at_any_write_is_finished_by_promoting_again(exporter: Gokku) -> None:
    gokku = exporter
    for name in ("old", "new"):
        gokku.ok("services:create", "x", "--name", name)

    def linked_again() -> None:
        for name in ("old", "new"):
            gokku("services:unlink", name, "-a", "api")
        gokku.ok("services:link", "old", "-a", "api")
        gokku.ok("services:link", "new", "-a", "api", "--alias", "NEW")

    linked_again()
    points = writes_of(gokku, "services:promote", "new", "-a", "api")
    assert points == 5  # both records (pending), the .env, both records (done)
    for n in range(1, points + 1):
        linked_again()
        assert killed_at_write(gokku, n, "services:promote", "new", "-a", "api") == -9
        gokku.ok("services:promote", "new", "-a", "api")
        assert env_of(gokku) == {"URL": "x://new", "NEW_URL": "x://new", "OLD_URL": "x://old"}
        assert [(x["keys"], "pending" in x) for x in links_of(gokku, "old")] == [
            (["OLD_URL"], False)
        ]
        assert [(x["keys"], "pending" in x) for x in links_of(gokku, "new")] == [
            (["NEW_URL", "URL"], False)
        ]


def test_a_create_killed_at_any_write_is_undone_by_the_next(exporter: Gokku) -> None:
    gokku = exporter
    gokku.ok("services:create", "x", "--name", "first")  # installs the helpers' file
    points = writes_of(gokku, "services:create", "x", "--name", "probe")
    assert points == 3  # the record, the directory holding it, settling after install
    for n in range(1, points + 1):
        assert killed_at_write(gokku, n, "services:create", "x", "--name", "db") == -9
        again = gokku("services:create", "x", "--name", "db")
        assert again.code == 0, (n, again.stderr)
        record = json.loads((gokku.root / "services" / "db" / "config.json").read_text())
        assert "state" not in record and record["env"] == {"URL": "x://db"}
        assert not list((gokku.root / "services").glob(".creating-*"))
        assert killed_at_write(gokku, n, "services:destroy", "db", "--force") in (-9, 0)
        gone = gokku("services:destroy", "db", "--force")
        assert gone.code in (0, 1)
        assert not (gokku.root / "services" / "db").exists()
        assert killed_at_write(gokku, n, "services:create", "x", "--name", "db") == -9
        # The cut-off create is destroyable too, whatever state it was left in.
        if (gokku.root / "services" / "db" / "config.json").exists():
            gokku.ok("services:destroy", "db", "--force")
        assert not (gokku.root / "services" / "db").exists()


def test_destroying_an_app_while_links_are_made_leaves_no_link_behind(exporter: Gokku) -> None:
    """apps:destroy --force racing services:link over 12 environments and 2 services."""
    gokku = exporter
    for service in ("a", "b"):
        gokku.ok("services:create", "x", "--name", service)
    for _round in range(3):
        gokku("apps:create", "dl")
        jobs = [("services:link", s, "-a", "dl", "--env", f"e{i}") for i in range(12) for s in "ab"]
        jobs.insert(len(jobs) // 2, ("apps:destroy", "dl", "--force"))
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda job: gokku(*job), jobs))
        assert results[len(jobs) // 2].code == 0
        assert all(r.stderr.count(" !     ") <= 1 for r in results)
        app = gokku.root / "apps" / "dl"
        for service in ("a", "b"):
            linked = {x["env"] for x in links_of(gokku, service) if x["app"] == "dl"}
            on_disk = {p.name for p in app.iterdir()} if app.exists() else set()
            assert linked <= on_disk, (service, linked, on_disk)
        if app.exists():  # links that came after the destroy were refused or made whole
            for env in app.iterdir():
                assert (env / ".env").exists() or not any(
                    x["env"] == env.name for s in "ab" for x in links_of(gokku, s)
                )
        gokku("apps:destroy", "dl", "--force")
        assert not app.exists() and all(links_of(gokku, s) == [] for s in "ab")


def test_config_set_and_link_of_the_same_variable_never_both_win(exporter: Gokku) -> None:
    gokku = exporter
    gokku.ok("services:create", "x", "--name", "s")
    for _round in range(8):
        with ThreadPoolExecutor(2) as pool:
            mine = pool.submit(gokku, "config:set", "-a", "api", "URL=mine")
            link = pool.submit(gokku, "services:link", "s", "-a", "api")
            codes = (mine.result().code, link.result().code)
        assert sorted(codes) == [0, 1], codes
        value = env_of(gokku)["URL"]
        assert value == ("mine" if codes[0] == 0 else "x://s")
        if codes[1] == 0:
            gokku.ok("services:unlink", "s", "-a", "api")
        else:
            gokku.ok("config:unset", "-a", "api", "URL")


def test_nothing_brings_back_a_destroyed_app(exporter: Gokku) -> None:
    gokku = exporter
    gokku.ok("apps:destroy", "api", "--force")
    for args in (
        ("config:set", "-a", "api", "K=v"),
        ("config:set", "-a", "api", "--env", "prod", "K=v"),
    ):
        assert gokku(*args).code == 1
    assert not (gokku.root / "apps" / "api").exists()


def test_an_update_whose_last_rename_fails_puts_the_old_version_back(
    gokku: Gokku, tmp_path: Path
) -> None:
    """The rollback branch of plugins:update: the new tree cannot be renamed into place
    (strace makes that one rename fail), so the old one goes back, whole and working."""
    tree = write_plugin(tmp_path / "src" / "u", commands={"commands/v": "echo one\n"})
    gokku.ok("plugins:add", str(tree))
    (tree / "commands" / "v").write_text("#!/bin/bash\necho two\n")
    trace = tmp_path / "trace"
    subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), "-e", f"trace={RENAMES}",
         sys.executable, "-m", "gokku", "plugins:update", "u"],
        env=gokku.env, cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    renames = [line for line in trace.read_text().splitlines() if "rename" in line]
    into_place = 1 + next(
        i
        for i, line in enumerate(renames)
        if line.rstrip().endswith(f'"{gokku.root}/plugins/u") = 0')
        and ".staging-" in line
        and "previous" not in line
    )
    (tree / "commands" / "v").write_text("#!/bin/bash\necho three\n")
    failed = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={RENAMES}",
         "-e", f"inject={RENAMES}:error=EACCES:when={into_place}",
         sys.executable, "-m", "gokku", "plugins:update", "u"],
        env=gokku.env, cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert failed.returncode == 1, failed.stderr
    assert failed.stderr.splitlines()[-1].startswith(" !     permission denied")
    assert gokku.ok("u:v").stdout == "two\n"
    assert [p["name"] for p in json.loads(gokku.ok("plugins:list", "--format", "json").stdout)] == [
        "u"
    ]
    assert not list((gokku.root / "plugins").glob(".staging-*"))
