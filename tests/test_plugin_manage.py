"""Managing installed plugins: pins that plugins:update respects, disabled plugins that
run nothing (commands, hooks, triggers, boot starts) while their services stay, removal
refused while another plugin requires the plugin, and the Debian packages a plugin needs,
installed only by root on the server with plugins:install-dependencies."""

import contextlib
import fcntl
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_plugin_index
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door
from test_deploy import HOOKS, build, triggers
from test_git import commit, git, remote, rev
from test_plugin_index import Shelf

# The signed HTTP index of test_plugin_index, and its publisher.
publisher = test_plugin_index.publisher
shelf = test_plugin_index.shelf
main_index = test_plugin_index.main_index


def add(gokku: Gokku, tmp_path: Path, name: str, manifest: str = "", **kwargs) -> Path:
    tree = write_plugin(tmp_path / "src" / name, **kwargs)
    if manifest:
        (tree / "plugin.yml").write_text(manifest)
    gokku.ok("plugins:add", str(tree))
    return tree


def listed(gokku: Gokku, name: str) -> dict:
    rows = json.loads(gokku.ok("plugins:list", "--format", "json").stdout)
    return next(row for row in rows if row["name"] == name)


def changed(gokku: Gokku, before: dict[str, bytes]) -> set[str]:
    after = gokku.snapshot()
    return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}


# ---- pins ----


def test_a_pinned_plugin_is_not_updated_until_unpinned(gokku: Gokku, tmp_path: Path) -> None:
    tree = add(gokku, tmp_path, "pinme", "version: 1.0.0\n")
    done = gokku.ok("plugins:pin", "pinme")
    assert "Pinned plugin pinme at 1.0.0" in done.stderr
    assert listed(gokku, "pinme")["pin"] == "1.0.0"
    table = gokku.ok("plugins:list").stdout.splitlines()
    assert table[0].split() == [
        "NAME",
        "NAMESPACE",
        "VERSION",
        "PIN",
        "STATE",
        "INDEX",
        "COMMIT",
        "SHA256",
        "SOURCE",
        "SERVICES",
    ]
    assert table[1].split()[:5] == ["pinme", "pinme", "1.0.0", "1.0.0", "enabled"]

    (tree / "plugin.yml").write_text("version: 2.0.0\n")
    before = gokku.snapshot()
    for args in (["pinme"], ["pinme", "--ref", "HEAD"]):
        refused = gokku("plugins:update", *args)
        assert (refused.code, refused.stderr) == (
            1,
            " !     plugin 'pinme' is pinned at 1.0.0; unpin it first: gokku plugins:unpin pinme\n",
        )
    assert gokku.snapshot() == before

    gokku.ok("plugins:pin", "pinme", "~1.0")  # a range, or a version the index will have
    assert listed(gokku, "pinme")["pin"] == "~1.0"
    gokku.ok("plugins:unpin", "pinme")
    assert listed(gokku, "pinme")["pin"] is None
    gokku.ok("plugins:update", "pinme")
    assert listed(gokku, "pinme")["version"] == "2.0.0"


def test_bad_pins_are_one_line_and_change_nothing(gokku: Gokku, tmp_path: Path) -> None:
    add(gokku, tmp_path, "plain")
    before = gokku.snapshot()
    for args, code, line in (
        (["plain"], 2, "plugin plain declares no version: give one (gokku plugins:pin plain"),
        (["plain", "1.0 2"], 2, "'1.0 2' is not a version (1.4.2) or a range (~1.4)"),
        (["plain", "$(id)"], 2, "'$(id)' is not a version"),
        (["plain", "abc"], 2, "'abc' is not a version (1.4.2) or a range (~1.4)"),
        (["nosuch", "1.0.0"], 1, "plugin 'nosuch' is not installed"),
        (["Bad/Name"], 2, "invalid plugin name"),
    ):
        result = gokku("plugins:pin", *args)
        assert (result.code, result.stdout) == (code, ""), args
        (only,) = result.stderr.splitlines()
        assert only.startswith(f" !     {line}"), only
    assert gokku.snapshot() == before


# ---- disabled plugins ----


@pytest.mark.parametrize("state_owner", ["nobody"])  # the build's sandbox refuses root
def test_a_disabled_plugin_runs_nothing_until_enabled(
    door: Door, gokku: Gokku, tmp_path: Path
) -> None:
    """Its commands, under its name and alias, answer one line saying how to enable it;
    help and completion leave it out; a push runs none of its triggers."""
    tree = write_plugin(gokku.root.parent / "src" / "builder", namespace="bld", commands=HOOKS)
    gokku.ok("plugins:add", str(tree))
    gokku.ok("apps:create", "api")
    work = tmp_path / "home" / "work"
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    commit(work, "app.txt", b"version 1\n")
    before = gokku.snapshot()
    assert door.ssh("plugins:disable builder").code == 0
    assert changed(gokku, before) == {"plugin-settings/builder.json", "log/audit.log"}

    refusal = " !     plugin 'builder' is disabled; enable it with: gokku plugins:enable builder\n"
    for command in ("builder:help", "bld:info x", "builder", "bld:list", "help builder"):
        result = door.ssh(command)
        assert (result.code, result.stdout, result.stderr) == (1, "", refusal), command
    assert "builder" not in door.ssh("help").stdout.split("=====> Plugins")[1].split("(")[0]
    assert "(1 disabled: see gokku plugins:list)" in door.ssh("help").stdout
    words = door.ssh("completion --words").stdout.split()
    assert "plugins:enable" in words
    assert not [w for w in words if w.startswith(("builder:", "bld:"))]

    pushed = git(door, "push", remote(door, "api"), "main", cwd=work)
    assert pushed.code == 0, pushed.stderr
    assert triggers(gokku) == [] and build(gokku) == {}

    assert door.ssh("plugins:enable builder").code == 0
    assert door.ssh("bld:help").stdout == "help for builder\n"
    assert door.ssh("apps:deploy api").code == 0
    assert build(gokku)["REVISION"] == rev(work, "HEAD") + "\n"


SERVICE_PLUGIN = {
    "commands/start": 'echo "start $1" >> "$GOKKU_ROOT/../ran.log"\n',
    "commands/status": 'echo "status $1" >> "$GOKKU_ROOT/../ran.log"; echo running\n',
    "hooks/post-link": 'echo "post-link $*" >> "$GOKKU_ROOT/../ran.log"\n',
}


def test_a_disabled_plugins_services_stay_and_nothing_of_it_runs(
    gokku: Gokku, tmp_path: Path
) -> None:
    """Dokku's disabled plugin: its services and their data stay as they are, but boot
    (services:start --all) skips them, saying so, and neither its status command nor
    its link hooks run; commands on one of its services say how to enable it."""
    add(gokku, tmp_path, "svc", commands=SERVICE_PLUGIN)
    add(gokku, tmp_path, "other", commands={"commands/start": SERVICE_PLUGIN["commands/start"]})
    gokku.ok("services:create", "svc", "--name", "db")
    gokku.ok("services:create", "other", "--name", "cache")
    gokku.ok("apps:create", "web")
    ran = gokku.root.parent / "ran.log"
    ran.unlink(missing_ok=True)
    before = gokku.snapshot()
    gokku.ok("plugins:disable", "svc")
    assert changed(gokku, before) == {"plugin-settings/svc.json"}
    assert listed(gokku, "svc")["enabled"] is False

    booted = gokku("services:start", "--all")
    assert booted.code == 0, booted.stderr
    assert "db: plugin svc is disabled; skipped" in booted.stderr
    assert ran.read_text() == "start cache\n"
    shown = json.loads(gokku.ok("services:list", "--format", "json").stdout)
    assert {s["name"]: s["status"] for s in shown}["db"] == "-"
    gokku.ok("services:link", "db", "-a", "web")  # Gokku's own part: the .env
    assert ran.read_text() == "start cache\n"  # no status, start or post-link of svc ran

    refusal = " !     plugin 'svc' is disabled; enable it with: gokku plugins:enable svc\n"
    for args in (
        ["services:info", "db"],
        ["services:start", "db"],
        ["services:create", "svc", "--name", "x"],
    ):
        result = gokku(*args)
        assert (result.code, result.stderr) == (1, refusal), args
    assert not (gokku.root / "services" / "x").exists()

    assert "already disabled" in gokku.ok("plugins:disable", "svc").stderr
    gokku.ok("plugins:enable", "svc")
    gokku.ok("services:start", "db")
    assert ran.read_text().splitlines()[-1] == "start db"


# ---- requires ----


def test_a_plugin_another_requires_is_not_removed(gokku: Gokku, tmp_path: Path) -> None:
    add(gokku, tmp_path, "base", "version: 1.2.0\n")
    add(gokku, tmp_path, "addon", "requires: {base: '>=1.0'}\n")
    add(gokku, tmp_path, "extra", "requires: {base: '^1', addon: '*'}\n")
    before = gokku.snapshot()
    for flags in ([], ["--force"]):
        refused = gokku("plugins:remove", "base", *flags)
        assert (refused.code, refused.stderr) == (
            1,
            " !     plugin 'base' is required by plugins addon, extra; remove plugins addon, "
            "extra first\n",
        )
    refused = gokku("plugins:remove", "addon")
    assert (
        refused.stderr
        == " !     plugin 'addon' is required by plugin extra; remove plugin extra first\n"
    )
    assert gokku.snapshot() == before
    for name in ("extra", "addon", "base"):
        gokku.ok("plugins:remove", name)
    assert not (gokku.root / "plugins" / "base").exists()


def test_a_plugin_another_from_an_index_requires_is_not_removed(
    gokku: Gokku, main_index: Shelf
) -> None:
    main_index.release("base", "1.0.0")
    main_index.release("top", "1.0.0", requires={"base": "^1"})
    gokku.ok("plugins:add", "top", "--yes")  # base comes along
    before = gokku.snapshot()
    refused = gokku("plugins:remove", "base", "--force")
    assert (refused.code, refused.stderr) == (
        1,
        " !     plugin 'base' is required by plugin top; remove plugin top first\n",
    )
    assert gokku.snapshot() == before
    gokku.ok("plugins:remove", "top")
    gokku.ok("plugins:remove", "base")
    assert not (gokku.root / "plugins" / "base").exists()


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("requires: [base]", "plugin.yml: 'requires' must map plugin names to version ranges"),
        ("requires: {Base: '1'}", "plugin.yml: 'requires' must map plugin names to version ranges"),
        ("system_packages: curl", "plugin.yml: 'system_packages' must be a list of Debian"),
        (
            "system_packages: [curl, 'rm -rf']",
            "plugin.yml: system package 'rm -rf' is not a Debian",
        ),
        ("system_packages: [Curl]", "plugin.yml: system package 'Curl' is not a Debian"),
    ],
)
def test_bad_requirements_are_refused_in_one_line(
    gokku: Gokku, tmp_path: Path, manifest: str, message: str
) -> None:
    tree = write_plugin(tmp_path / "src" / "needy")
    (tree / "plugin.yml").write_text(manifest + "\n")
    added = gokku("plugins:add", str(tree))
    assert added.code == 1
    (line,) = [ln for ln in added.stderr.splitlines() if ln.startswith(" !")]
    assert message in line
    assert not (gokku.root / "plugins" / "needy").exists()


# ---- system packages ----

# A tiny package of the Debian archive that nothing here installs: the test installs it
# and removes it again.
ABSENT_PACKAGE = "sl"


def installed(package: str) -> bool:
    done = subprocess.run(
        ["dpkg-query", "-W", "-f=${db:Status-Status}", package], capture_output=True, text=True
    )
    return done.stdout == "installed"


@contextlib.contextmanager
def host_packages() -> Iterator[None]:
    """One test at a time changes this host's packages (other runs of this file too)."""
    with open(Path(tempfile.gettempdir()) / "gokku-test-packages.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def test_add_says_what_is_missing_and_installs_nothing(gokku: Gokku, tmp_path: Path) -> None:
    with host_packages():
        assert not installed(ABSENT_PACKAGE)
        tree = write_plugin(tmp_path / "src" / "needy")
        (tree / "plugin.yml").write_text(f"system_packages: [bash, {ABSENT_PACKAGE}]\n")
        added = gokku.ok("plugins:add", str(tree))
        assert added.stderr.splitlines()[-1] == (
            f" !     plugin needy needs system packages that are not installed: {ABSENT_PACKAGE} "
            "(as root on the server: gokku plugins:install-dependencies needy)"
        )
        assert not installed(ABSENT_PACKAGE)
        plain = write_plugin(tmp_path / "src" / "plain")
        (plain / "plugin.yml").write_text("system_packages: [bash]\n")
        assert "needs system packages" not in gokku.ok("plugins:add", str(plain)).stderr


def test_an_index_install_says_what_is_missing_too(gokku: Gokku, main_index: Shelf) -> None:
    with host_packages():
        assert not installed(ABSENT_PACKAGE)
        main_index.release("base", "1.0.0", system_packages=["bash", ABSENT_PACKAGE])
        main_index.release("top", "1.0.0", requires={"base": "^1"})
        added = gokku.ok("plugins:add", "top", "--yes")
        assert added.stderr.splitlines()[-3:] == [
            "-----> Plugin base 1.0.0 installed from index main",
            f" !     plugin base needs system packages that are not installed: {ABSENT_PACKAGE} "
            "(as root on the server: gokku plugins:install-dependencies base)",
            "-----> Plugin top 1.0.0 installed from index main",
        ]
        assert not installed(ABSENT_PACKAGE)


def test_install_dependencies_over_ssh_is_refused(door: Door, gokku: Gokku) -> None:
    result = door.ssh("plugins:install-dependencies t")
    assert (result.code, result.stdout, result.stderr) == (
        1,
        "",
        " !     plugins:install-dependencies is not available over SSH\n",
    )


def _state_of_nobody(tmp_path: Path) -> Path:
    """A GOKKU_ROOT owned by an unprivileged user, in a place that user can reach."""
    folder = Path(tempfile.mkdtemp(prefix="gokku-deps-"))
    folder.chmod(0o755)
    root = folder / "root"
    shutil.copytree(tmp_path / "root", root, symlinks=True)
    subprocess.run(["chown", "-R", "nobody:nogroup", str(root)], check=True)
    return root


def test_install_dependencies_needs_root(gokku: Gokku, tmp_path: Path) -> None:
    add(gokku, tmp_path, "needy", "system_packages: [bash]\n")
    root = _state_of_nobody(tmp_path)
    try:
        as_nobody = Gokku(
            root,
            {**gokku.env, "GOKKU_ROOT": str(root)},
            prefix=["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"],
        )
        result = as_nobody("plugins:install-dependencies", "needy")
        assert (result.code, result.stderr) == (
            1,
            " !     plugins:install-dependencies installs Debian packages: run it as root "
            "(sudo gokku plugins:install-dependencies needy)\n",
        )
        # Root keeps root for this verb, where every other one works as the state's owner.
        as_root = Gokku(root, {**gokku.env, "GOKKU_ROOT": str(root)})
        done = as_root("plugins:install-dependencies", "needy")
        assert (done.code, done.stderr) == (
            0,
            "-----> Every system package plugin needy needs is installed\n",
        )
    finally:
        shutil.rmtree(root.parent)


def test_install_dependencies_installs_only_what_is_missing(gokku: Gokku, tmp_path: Path) -> None:
    with host_packages():
        assert not installed(ABSENT_PACKAGE)
        add(gokku, tmp_path, "needy", f"system_packages: [bash, {ABSENT_PACKAGE}]\n")
        try:
            done = gokku("plugins:install-dependencies", "needy", timeout=600)
            assert done.code == 0, done.stderr
            assert done.stderr.startswith(f"-----> Installing {ABSENT_PACKAGE} for plugin needy\n")
            assert installed(ABSENT_PACKAGE)
            again = gokku.ok("plugins:install-dependencies", "needy")
            assert again.stderr == "-----> Every system package plugin needy needs is installed\n"
        finally:
            subprocess.run(
                ["apt-get", "purge", "-y", "-q", "-o", "DPkg::Lock::Timeout=300", ABSENT_PACKAGE],
                capture_output=True,
            )
        assert not installed(ABSENT_PACKAGE)
