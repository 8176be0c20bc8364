"""The plugin manager: plugins:add from every kind of source, namespace aliases, the
contract, update, remove, validate, list, help, and unknown-command routing."""

import hashlib
import io
import json
import os
import re
import subprocess
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO, write_plugin
from plugin_checks import error_line, keep_one, plugin_entries

NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


def listed(gokku) -> dict[str, dict]:
    records = json.loads(gokku.ok("plugins:list", "--format", "json").stdout)
    return {record["name"]: record for record in records}


def origin(record: dict) -> tuple[str, str | None]:
    return record["source"], record["commit"]


def git_repo(path: Path, branch: str = "main") -> str:
    """Commit ``path`` as a git repository; return the commit id."""
    run = [*GIT, "-C", str(path)]
    if not (path / ".git").exists():
        subprocess.run([*run, "init", "-q", "-b", branch], check=True)
    subprocess.run([*run, "add", "-A"], check=True)
    subprocess.run([*run, "commit", "-q", "-m", "change"], check=True)
    return subprocess.run(
        [*run, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def tar_gz(tree: Path, top: str) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tree, arcname=top)
    return buffer.getvalue()


@pytest.fixture
def kept(gokku, tmp_path):
    return keep_one(gokku, tmp_path)


# --- sources ---------------------------------------------------------------------------


def test_github_short_source_installs_and_records_commit(gokku, github, tmp_path):
    tree = write_plugin(tmp_path / "gokku-demo", namespace="dm")
    commit = github.publish("acme", "gokku-demo", tree)

    result = gokku.ok("plugins:add", "acme/gokku-demo")

    assert "Plugin demo installed (namespace dm)" in result.stderr
    assert gokku.ok("demo:info", "s1").stdout == "info s1\n"
    assert gokku.ok("dm:info", "s2").stdout == "info s2\n"
    served = (github.folder / "acme/gokku-demo/archive/HEAD.tar.gz").read_bytes()
    record = listed(gokku)["demo"]
    assert record["source"] == "acme/gokku-demo@HEAD"
    assert record["commit"] == commit
    assert record["sha256"] == hashlib.sha256(served).hexdigest()
    assert record["namespace"] == "dm"
    assert not (gokku.root / "plugins/demo/.git").exists()


def test_github_forms_https_at_ref_and_ref_option(gokku, github, tmp_path):
    tree = write_plugin(tmp_path / "gokku-multi", commands={"commands/which": "echo one\n"})
    one = github.publish("acme", "gokku-multi", tree, ref="v1")
    (tree / "commands/which").write_text("echo two\n")
    two = github.publish("acme", "gokku-multi", tree, ref="v2")
    (tree / "commands/which").write_text("echo head\n")
    head = github.publish("acme", "gokku-multi", tree)

    gokku.ok("plugins:add", "https://github.com/acme/gokku-multi")
    gokku.ok("plugins:add", "acme/gokku-multi@v1", "--name", "at-one")
    gokku.ok("plugins:add", "acme/gokku-multi", "--ref", "v2", "--name", "at-two")

    assert gokku.ok("multi:which").stdout == "head\n"
    assert gokku.ok("at-one:which").stdout == "one\n"
    assert gokku.ok("at-two:which").stdout == "two\n"
    records = listed(gokku)
    assert origin(records["multi"]) == ("acme/gokku-multi@HEAD", head)
    assert origin(records["at-one"]) == ("acme/gokku-multi@v1", one)
    assert origin(records["at-two"]) == ("acme/gokku-multi@v2", two)


def test_http_archive_url_source(gokku, github, tmp_path):
    tree = write_plugin(tmp_path / "src", namespace="thing")
    data = tar_gz(tree, "gokku-thing-1.0")
    url = github.serve_file("downloads/gokku-thing.tgz", data)

    gokku.ok("plugins:add", url)

    assert gokku.ok("thing:info", "a").stdout == "info a\n"
    record = listed(gokku)["thing"]
    assert record["source"] == url
    assert record["sha256"] == hashlib.sha256(data).hexdigest()


def test_git_file_url_source_with_branch_and_commit_refs(gokku, tmp_path):
    repo = write_plugin(tmp_path / "gokku-gitdemo", commands={"commands/which": "echo main\n"})
    first = git_repo(repo)
    subprocess.run([*GIT, "-C", str(repo), "checkout", "-q", "-b", "stable"], check=True)
    (repo / "commands/which").write_text("echo stable\n")
    stable = git_repo(repo)
    subprocess.run([*GIT, "-C", str(repo), "checkout", "-q", "main"], check=True)
    url = f"file://{repo}"

    gokku.ok("plugins:add", url)
    gokku.ok("plugins:add", url, "--ref", "stable", "--name", "gd-stable")
    gokku.ok("plugins:add", url, "--ref", first, "--name", "gd-first")

    assert gokku.ok("gitdemo:which").stdout == "main\n"
    assert gokku.ok("gd-stable:which").stdout == "stable\n"
    assert gokku.ok("gd-first:which").stdout == "main\n"
    records = listed(gokku)
    assert origin(records["gitdemo"]) == (url, first)
    assert records["gd-stable"]["source"] == f"{url}@stable"
    assert records["gd-stable"]["commit"] == stable
    assert records["gd-first"]["commit"] == first
    assert not (gokku.root / "plugins/gitdemo/.git").exists()


def test_local_bare_repository_path_is_cloned(gokku, tmp_path):
    work = write_plugin(tmp_path / "work", namespace="bare")
    commit = git_repo(work)
    bare = tmp_path / "gokku-bare.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)

    gokku.ok("plugins:add", str(bare))

    assert gokku.ok("bare:info", "x").stdout == "info x\n"
    assert listed(gokku)["bare"]["commit"] == commit


def test_local_directory_source_name_and_prefix(gokku, tmp_path):
    tree = write_plugin(tmp_path / "gokku-local", namespace="loc")
    (tree / "notes.txt").write_text("kept\n")

    gokku.ok("plugins:add", str(tree))

    assert gokku.ok("local:info", "x").stdout == "info x\n"
    assert (gokku.root / "plugins/local/notes.txt").read_text() == "kept\n"
    assert listed(gokku)["local"]["source"] == str(tree)


def test_name_option_overrides_the_derived_name(gokku, tmp_path):
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "gokku-long-name")), "--name", "short")
    assert gokku.ok("short:info", "x").stdout == "info x\n"
    assert plugin_entries(gokku) == ["short"]


def test_local_archive_source_records_sha256(gokku, tmp_path):
    data = tar_gz(write_plugin(tmp_path / "src", namespace="packed"), "top")
    archive = tmp_path / "gokku-packed.tar.gz"
    archive.write_bytes(data)

    gokku.ok("plugins:add", str(archive))

    assert gokku.ok("packed:info", "x").stdout == "info x\n"
    record = listed(gokku)["packed"]
    assert record["sha256"] == hashlib.sha256(data).hexdigest()
    assert record["source"] == str(archive)


def test_unknown_official_name_is_a_clear_error(gokku, kept):
    result = gokku("plugins:add", "no-such-official")
    assert result.code == 1
    assert "no official plugin named 'no-such-official'" in error_line(result)
    assert gokku.snapshot() == kept
    assert plugin_entries(gokku) == ["keep"]


BUNDLED = sorted(
    p.name for p in (REPO / "gokku/bundled").glob("*") if p.is_dir() and NAME.match(p.name)
)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_plugin_installs_by_bare_name(gokku, name):
    gokku.ok("plugins:add", name)
    assert name in listed(gokku)


# --- refusals of the source text and of the network ------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "missing argument"),
        (["a/b", "c/d"], "unexpected argument 'c/d'"),
        (["a/b", "--name"], "option --name needs a value"),
        (["a/b", "--ref"], "option --ref needs a value"),
        (["a/b", "--bogus"], "unknown option --bogus"),
        (["a/b", "--name", "Bad_Name"], "invalid plugin name 'Bad_Name'"),
        (["not a source!"], "cannot tell what plugin source 'not a source!' is"),
        (["acme/repo@"], "cannot tell what plugin source 'acme/repo@' is"),
        (["a/b/c"], "cannot tell what plugin source 'a/b/c' is"),
        (["ftp://example.com/x.tar.gz"], "cannot tell what plugin source"),
        (["http://127.0.0.1:1/page.html"], "is not a .tar.gz/.tgz archive URL"),
        (["acme/Under_Score"], "cannot make a plugin name from 'acme/Under_Score'"),
        (["postgres", "--ref", "v1"], "--ref applies to GitHub and git sources"),
        (["http://127.0.0.1:1/gokku-x.tgz", "--ref", "v1"], "--ref applies to GitHub"),
        (["/", "--ref", "v1"], "--ref applies to GitHub and git sources, not to '/'"),
    ],
)
def test_usage_errors_exit_2_and_change_nothing(gokku, kept, args, message):
    result = gokku("plugins:add", *args)
    assert result.code == 2
    assert message in error_line(result)
    assert gokku.snapshot() == kept
    assert plugin_entries(gokku) == ["keep"]


def test_http_404_unreachable_and_non_archive_urls_fail_cleanly(gokku, github, kept):
    html = github.serve_file("dl/gokku-page.tar.gz", b"<html>sign in</html>\n")
    cases = [
        (["acme/gokku-missing"], "archive/HEAD.tar.gz: HTTP 404"),
        ([f"{github.url}/nowhere/gokku-x.tar.gz"], "HTTP 404"),
        (["http://127.0.0.1:1/gokku-x.tar.gz"], "could not download http://127.0.0.1:1/"),
        ([html], "not a readable tar archive"),
    ]
    for args, message in cases:
        result = gokku("plugins:add", *args)
        assert result.code == 1, args
        assert message in error_line(result)
        assert gokku.snapshot() == kept
        assert plugin_entries(gokku) == ["keep"]


def test_git_clone_failure_is_one_line(gokku, tmp_path, kept):
    result = gokku("plugins:add", f"file://{tmp_path}/gokku-nothing.git")
    assert result.code == 1
    assert "git clone failed" in error_line(result)
    result = gokku("plugins:add", f"file://{tmp_path}/keep", "--ref", "no-such-branch")
    assert result.code == 1
    assert "git" in error_line(result)
    assert gokku.snapshot() == kept


# --- official layout -------------------------------------------------------------------

OFFICIAL = {
    "bin/install": 'source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"\nsay "install $1"\n',
    "bin/uninstall": 'source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"\nsay "bye $1"\n',
    "bin/status": 'echo "status from bin $1"\n',
    "commands/status": 'echo "status from commands $1"\n',
    "commands/help": 'echo "official help"\n',
    "commands/info": 'source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"\nsay "info $1"\n',
    "commands/logs": 'echo "logs $1"\n',
    "commands/name": "off\n",
    "lib/common.sh": 'say() { echo "common says: $*"; }\n',
    "plugin.yml": "version: 2.5.0\ndescription: An official-layout plugin\n",
}


def test_official_layout_installs_and_runs(gokku, github, tmp_path):
    tree = tmp_path / "gokku-official"
    for rel, body in OFFICIAL.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(body)
        os.chmod(tree / rel, 0o644)  # no shebang, no run bit: as shipped
    github.publish("gokku-vm", "gokku-official", tree)

    gokku.ok("plugins:add", "gokku-vm/gokku-official")

    installed = gokku.root / "plugins/official"
    for rel in ("bin/install", "bin/uninstall", "bin/status", "commands/info", "commands/help"):
        assert (installed / rel).stat().st_mode & 0o111 == 0o111, rel
    created = gokku.ok("services:create", "official", "--name", "o1")
    assert "common says: install o1" in created.stdout
    assert gokku.ok("off:info", "o1").stdout == "common says: info o1\n"
    assert gokku.ok("official:status", "o1").stdout == "status from bin o1\n"
    assert gokku.ok("off").stdout == "official help\n"
    record = listed(gokku)["official"]
    assert (record["version"], record["namespace"], record["services"]) == ("2.5.0", "off", 1)


# --- namespace aliases -----------------------------------------------------------------


def test_alias_and_name_run_the_same_script(gokku, tmp_path):
    tree = write_plugin(
        tmp_path / "gokku-postgres",
        namespace="pg",
        commands={"commands/export": 'printf "export:%s:%s\\n" "$GOKKU_PLUGIN_NAME" "$*"\n'},
    )
    gokku.ok("plugins:add", str(tree))

    by_alias = gokku.ok("pg:export", "db1", "a b")
    by_name = gokku.ok("postgres:export", "db1", "a b")

    assert by_alias.stdout == by_name.stdout == "export:postgres:db1 a b\n"
    assert gokku.ok("pg:help").stdout == gokku.ok("postgres").stdout == "help for postgres\n"


@pytest.mark.parametrize(
    ("plugin", "name_option", "namespace", "message"),
    [
        ("gokku-cfg", None, "config", "namespace 'config' is taken by Gokku's built-in commands"),
        ("gokku-svc", None, "services", "'services' is taken by Gokku's built-in commands"),
        ("gokku-x", "plugins", "x", "'plugins' is taken by Gokku's built-in commands"),
        ("gokku-apps", None, "ap", "'apps' is taken by Gokku's built-in commands"),
        ("gokku-other", None, "keep", "namespace 'keep' is taken by plugin 'keep'"),
        ("gokku-other", None, "kp", "namespace 'kp' is taken by plugin 'keep'"),
        ("gokku-kp", None, "kappa", "namespace 'kp' is taken by plugin 'keep'"),
    ],
)
def test_taken_names_and_aliases_are_refused(
    gokku, tmp_path, plugin, name_option, namespace, message
):
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "keep", namespace="kp")))
    before = gokku.snapshot()
    args = ["--name", name_option] if name_option else []

    result = gokku("plugins:add", str(write_plugin(tmp_path / plugin, namespace=namespace)), *args)

    assert result.code == 1
    assert message in error_line(result)
    assert gokku.snapshot() == before
    assert plugin_entries(gokku) == ["keep"]


def test_plugins_added_at_once_cannot_share_an_alias(gokku, tmp_path):
    trees = [write_plugin(tmp_path / f"racer-{i}", namespace="race") for i in range(4)]
    with ThreadPoolExecutor(len(trees)) as pool:
        results = list(pool.map(lambda tree: gokku("plugins:add", str(tree)), trees))

    assert sorted(r.code for r in results) == [0, 1, 1, 1]
    for result in results:
        if result.code:
            assert "namespace 'race' is taken by plugin 'racer-" in error_line(result)
    assert len(plugin_entries(gokku)) == 1


# --- the contract ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("drop", "missing"),
    [
        ("install", "missing install (or bin/install)"),
        ("uninstall", "missing uninstall (or bin/uninstall)"),
        ("commands/help", "missing commands/help"),
        ("commands/info", "missing commands/info"),
        ("commands/logs", "missing commands/logs"),
    ],
)
def test_contract_violation_is_refused_and_leaves_nothing(
    gokku, github, tmp_path, kept, drop, missing
):
    tree = write_plugin(tmp_path / "gokku-broken", namespace="broken")
    (tree / drop).unlink()
    github.publish("acme", "gokku-broken", tree)

    result = gokku("plugins:add", "acme/gokku-broken")

    assert result.code == 1
    line = error_line(result)
    assert line == f" !     plugin 'broken' does not follow the plugin contract: {missing}"
    assert gokku.snapshot() == kept
    assert plugin_entries(gokku) == ["keep"]


def test_bad_commands_name_and_plugin_yml_are_refused(gokku, tmp_path, kept):
    tree = write_plugin(tmp_path / "gokku-odd")
    (tree / "commands/name").write_text("two words\n")
    result = gokku("plugins:add", str(tree))
    assert result.code == 1
    assert "commands/name must hold (or echo) one lowercase namespace word" in error_line(result)

    (tree / "commands/name").write_text("odd\n")
    (tree / "plugin.yml").write_text("version: [unclosed\n")
    result = gokku("plugins:add", str(tree))
    assert result.code == 1
    assert "plugin.yml is not valid YAML" in error_line(result)
    assert gokku.snapshot() == kept
    assert plugin_entries(gokku) == ["keep"]


def test_missing_commands_name_is_only_a_warning(gokku, tmp_path):
    result = gokku.ok("plugins:add", str(write_plugin(tmp_path / "gokku-plain")))
    assert " !     plain: missing commands/name (no namespace alias)" in result.stderr.splitlines()
    assert listed(gokku)["plain"]["namespace"] == "plain"


# --- update ----------------------------------------------------------------------------


def test_update_swaps_in_the_new_version(gokku, github, tmp_path):
    tree = write_plugin(
        tmp_path / "gokku-demo",
        namespace="dm",
        commands={"commands/old": "echo old\n", "commands/which": "echo v1\n"},
    )
    (tree / "plugin.yml").write_text("version: 1.0.0\n")
    github.publish("acme", "gokku-demo", tree)
    gokku.ok("plugins:add", "acme/gokku-demo")

    (tree / "commands/old").unlink()
    (tree / "commands/which").write_text("echo v2\n")
    (tree / "commands/new").write_text("echo new\n")
    (tree / "plugin.yml").write_text("version: 2.0.0\n")
    commit = github.publish("acme", "gokku-demo", tree)

    result = gokku.ok("plugins:update", "demo")

    assert "Plugin demo updated from acme/gokku-demo@HEAD" in result.stderr
    installed = gokku.root / "plugins/demo"
    assert not (installed / "commands/old").exists()
    assert gokku.ok("dm:which").stdout == "v2\n"
    assert gokku.ok("dm:new").stdout == "new\n"
    assert gokku("dm:old").code == 127
    record = listed(gokku)["demo"]
    assert (record["version"], record["commit"]) == ("2.0.0", commit)
    assert [p for p in plugin_entries(gokku) if p.startswith(".")] == []


def test_update_with_ref_moves_to_that_ref(gokku, github, tmp_path):
    tree = write_plugin(
        tmp_path / "gokku-demo", namespace="dm", commands={"commands/v": "echo 1\n"}
    )
    github.publish("acme", "gokku-demo", tree, ref="v1")
    (tree / "commands/v").write_text("echo 2\n")
    two = github.publish("acme", "gokku-demo", tree, ref="v2")
    gokku.ok("plugins:add", "acme/gokku-demo@v1")
    assert gokku.ok("dm:v").stdout == "1\n"

    gokku.ok("plugins:update", "demo", "--ref", "v2")

    assert gokku.ok("dm:v").stdout == "2\n"
    record = listed(gokku)["demo"]
    assert origin(record) == ("acme/gokku-demo@v2", two)


def test_update_of_a_git_source_fetches_the_new_commit(gokku, tmp_path):
    repo = write_plugin(tmp_path / "gokku-gd", namespace="gd", commands={"commands/v": "echo 1\n"})
    git_repo(repo)
    gokku.ok("plugins:add", f"file://{repo}")
    (repo / "commands/v").write_text("echo 2\n")
    commit = git_repo(repo)

    gokku.ok("plugins:update", "gd")

    assert gokku.ok("gd:v").stdout == "2\n"
    assert listed(gokku)["gd"]["commit"] == commit


@pytest.mark.parametrize("breakage", ["contract", "alias-taken", "http-404", "not-an-archive"])
def test_failed_update_keeps_the_old_version_intact(gokku, github, tmp_path, breakage):
    tree = write_plugin(
        tmp_path / "gokku-demo", namespace="dm", commands={"commands/v": "echo 1\n"}
    )
    github.publish("acme", "gokku-demo", tree)
    gokku.ok("plugins:add", "acme/gokku-demo")
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "other", namespace="ot")))
    before = gokku.snapshot()
    served = github.folder / "acme/gokku-demo/archive/HEAD.tar.gz"
    if breakage == "contract":
        (tree / "commands/v").write_text("echo 2\n")
        (tree / "commands/info").unlink()
        github.publish("acme", "gokku-demo", tree)
    elif breakage == "alias-taken":
        (tree / "commands/v").write_text("echo 2\n")
        (tree / "commands/name").write_text("ot\n")
        github.publish("acme", "gokku-demo", tree)
    elif breakage == "http-404":
        served.unlink()
    else:
        served.write_bytes(b"<html>rate limited</html>\n")

    result = gokku("plugins:update", "demo")

    assert result.code == 1
    error_line(result)
    assert gokku.snapshot() == before
    assert plugin_entries(gokku) == ["demo", "other"]
    assert gokku.ok("dm:v").stdout == "1\n"


def test_update_refusals(gokku, tmp_path, kept):
    result = gokku("plugins:update", "nothing")
    assert result.code == 1
    assert "plugin 'nothing' is not installed" in error_line(result)
    assert gokku("plugins:update").code == 2
    assert gokku("plugins:update", "Bad_Name").code == 2

    tree = write_plugin(tmp_path / "gokku-moving", namespace="mv")
    gokku.ok("plugins:add", str(tree))
    before = gokku.snapshot()
    tree.rename(tmp_path / "moved")
    result = gokku("plugins:update", "moving")
    assert result.code == 1
    assert str(tree) in error_line(result)
    assert gokku.snapshot() == before


# --- remove and re-add -----------------------------------------------------------------


def test_remove_refuses_while_services_exist_unless_forced(gokku, tmp_path):
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "gokku-db", namespace="db")))
    gokku.ok("services:create", "db", "--name", "db-one")
    gokku.ok("services:create", "db", "--name", "db-two")
    before = gokku.snapshot()

    result = gokku("plugins:remove", "db")

    assert result.code == 1
    assert error_line(result) == (
        " !     destroying plugin 'db' deletes the plugin its services db-one, db-two need "
        "(they stay, without it): confirm on a terminal (ssh -t) or add --force"
    )
    assert gokku.snapshot() == before

    result = gokku.ok("plugins:remove", "db", "--force")
    assert " !     services left without their plugin: db-one, db-two" in result.stderr
    assert plugin_entries(gokku) == []
    assert (gokku.root / "services/db-one/config.json").is_file()
    assert gokku.ok("plugins:list").stdout == "No plugins installed\n"


def test_remove_without_services_and_refusals(gokku, tmp_path, kept):
    result = gokku("plugins:remove", "nothing")
    assert result.code == 1
    assert "plugin 'nothing' is not installed" in error_line(result)
    assert gokku("plugins:remove").code == 2
    assert gokku.snapshot() == kept

    result = gokku.ok("plugins:remove", "keep")
    assert "Plugin keep removed" in result.stderr
    assert plugin_entries(gokku) == []
    assert gokku("keep:info", "x").code == 127


def test_re_adding_from_the_same_source_is_idempotent(gokku, github, tmp_path):
    tree = write_plugin(tmp_path / "gokku-demo", namespace="dm")
    github.publish("acme", "gokku-demo", tree)
    gokku.ok("plugins:add", "acme/gokku-demo")
    before = gokku.snapshot()

    result = gokku.ok("plugins:add", "acme/gokku-demo")

    assert "Plugin demo is already installed from acme/gokku-demo@HEAD" in result.stderr
    assert gokku.snapshot() == before

    other = write_plugin(tmp_path / "elsewhere" / "gokku-demo", namespace="dm")
    result = gokku("plugins:add", str(other))
    assert result.code == 1
    assert "plugin 'demo' is already installed from acme/gokku-demo@HEAD" in error_line(result)
    assert gokku.snapshot() == before


# --- validate --------------------------------------------------------------------------


def test_validate_reports_one_line_per_finding(gokku, tmp_path):
    tree = write_plugin(tmp_path / "draft")
    (tree / "uninstall").unlink()
    (tree / "commands/logs").unlink()

    result = gokku("plugins:validate", str(tree))

    assert result.code == 1
    assert result.stdout.splitlines() == [
        "error: missing uninstall (or bin/uninstall)",
        "error: missing commands/logs",
        "warning: missing commands/name (no namespace alias)",
    ]


def test_validate_clean_warning_only_and_installed(gokku, tmp_path):
    clean = write_plugin(tmp_path / "clean", namespace="clean", layout="official")
    result = gokku.ok("plugins:validate", str(clean))
    assert result.stdout == f"ok: {clean} follows the plugin contract\n"

    result = gokku.ok("plugins:validate", str(write_plugin(tmp_path / "noname")))
    assert result.stdout == "warning: missing commands/name (no namespace alias)\n"

    gokku.ok("plugins:add", str(clean))
    assert gokku.ok("plugins:validate", "clean").stdout == "ok: clean follows the plugin contract\n"

    result = gokku("plugins:validate", str(tmp_path / "absent"))
    assert result.code == 1
    assert "is neither an installed plugin nor a directory" in error_line(result)
    assert gokku("plugins:validate").code == 2


# --- list and help ---------------------------------------------------------------------


def test_list_empty(gokku):
    assert gokku.ok("plugins:list").stdout == "No plugins installed\n"
    assert json.loads(gokku.ok("plugins:list", "--format", "json").stdout) == []
    assert json.loads(gokku.ok("--format", "json", "plugins:list").stdout) == []


def test_list_table_and_json(gokku, tmp_path):
    pg = write_plugin(tmp_path / "gokku-postgres", namespace="pg")
    (pg / "plugin.yml").write_text("version: 15.2\ndescription: PostgreSQL databases\n")
    gokku.ok("plugins:add", str(pg))
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "redis", namespace="redis")))
    gokku.ok("services:create", "pg", "--name", "main-db")

    lines = gokku.ok("plugins:list").stdout.splitlines()

    assert lines[0].split() == [
        *("NAME", "NAMESPACE", "VERSION", "PIN", "STATE", "INDEX", "COMMIT", "SHA256"),
        *("SOURCE", "SERVICES"),
    ]
    assert [line.split() for line in lines[1:]] == [
        ["postgres", "pg", "15.2", "-", "enabled", "unverified", "-", "-", str(pg), "1"],
        [
            "redis",
            "redis",
            "-",
            "-",
            "enabled",
            "unverified",
            "-",
            "-",
            str(tmp_path / "redis"),
            "0",
        ],
    ]
    records = json.loads(gokku.ok("plugins:list", "--format", "json").stdout)
    assert [
        (r["name"], r["namespace"], r["version"], r["source"], r["services"]) for r in records
    ] == [
        ("postgres", "pg", "15.2", str(pg), 1),
        ("redis", "redis", "", str(tmp_path / "redis"), 0),
    ]
    assert gokku("plugins:list", "--format").code == 2


def test_help_lists_plugins_with_their_description(gokku, tmp_path):
    pg = write_plugin(tmp_path / "gokku-postgres", namespace="pg")
    (pg / "plugin.yml").write_text("version: 1\ndescription: PostgreSQL databases\n")
    gokku.ok("plugins:add", str(pg))
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "plain", namespace="plain")))

    lines = gokku.ok("help").stdout.splitlines()

    assert "  postgres (pg): PostgreSQL databases" in lines
    assert "  plain: see: gokku plain:help" in lines


# --- unknown plugins and commands ------------------------------------------------------


def test_unknown_plugin_and_command_exit_127_with_suggestion(gokku, tmp_path):
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "gokku-postgres", namespace="pg")))

    result = gokku("postgre:info", "x")
    assert result.code == 127
    assert "unknown command 'postgre:info'; did you mean 'postgres:info'?" in error_line(result)

    result = gokku("pg:inof", "x")
    assert result.code == 127
    assert "plugin 'postgres' has no command 'inof'; did you mean 'pg:info'?" in error_line(result)

    result = gokku("plugins:ad", "x")
    assert result.code == 127
    assert "did you mean 'plugins:add'?" in error_line(result)


def test_remains_of_a_killed_add_are_cleared_by_the_next_one(gokku, tmp_path):
    stale = gokku.root / "plugins" / ".staging-demo-deadbeef"
    (stale / "copy").mkdir(parents=True)
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "gokku-demo", namespace="demo")))
    assert not stale.exists()
    assert [p.name for p in (gokku.root / "plugins").iterdir()] == ["demo"]
