"""Signed plugin indexes, end to end: indexes built with ``plugins:publish`` and test SSH
keys, served over HTTP and as a git repository; plugins installed through them with what
they require, or refused (tampered, unsigned, unknown signer, wrong archive, conflict,
cycle, incompatible Gokku) with one line and nothing installed."""

import hashlib
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from conftest import REPO, write_plugin
from plugin_checks import error_line, plugin_entries
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, make_key

from gokku.plugins import signing

GIT = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]


@pytest.fixture
def ssh_settings(github) -> dict:
    """Both doors fetch GitHub archives from the fake GitHub (sshd's forced command starts
    from an empty environment, so its command line says where)."""
    command = f"env PYTHONPATH={REPO} GOKKU_GITHUB_URL={github.url} {sys.executable} -m gokku"
    return {"gokku_command": command}


@dataclass
class Signer:
    key: Path
    allowed: bytes  # one allowed_signers line for its public key


def signer(folder: Path, name: str) -> Signer:
    key = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True
    )
    public = (folder / f"{name}.pub").read_text().split()
    return Signer(key, f"{name}@example.com {public[0]} {public[1]}\n".encode())


@pytest.fixture
def publisher(tmp_path: Path) -> Signer:
    (tmp_path / "signers").mkdir(exist_ok=True)
    return signer(tmp_path / "signers", "publisher")


@pytest.fixture
def stranger(tmp_path: Path) -> Signer:
    (tmp_path / "signers").mkdir(exist_ok=True)
    return signer(tmp_path / "signers", "stranger")


@dataclass
class Shelf:
    """An index directory served over HTTP by the fake GitHub, and the plugins it lists."""

    gokku: object
    github: object
    folder: Path
    url: str
    key: Path
    tmp: Path

    def release(
        self, name: str, version: str, requires=None, gokku="^0.1", files=None, **extra
    ) -> str:
        """Publish ``name`` ``version`` on the fake GitHub and in the index; its sha256.
        ``files``: more scripts of the plugin (``{"hooks/post-update": "exit 0"}``)."""
        tree = write_plugin(self.tmp / "src" / f"{name}-{version}", namespace=name, commands=files)
        manifest = {"version": version, "description": f"the {name} plugin", "gokku": gokku}
        (tree / "plugin.yml").write_text(
            yaml.safe_dump({**manifest, "requires": requires or {}, **extra})
        )
        (tree / "commands/which").write_text(f"#!/bin/bash\necho {name} {version}\n")
        self.github.publish("acme", f"gokku-{name}", tree, ref=f"v{version}")
        self.publish(f"acme/gokku-{name}@v{version}", version)
        return self.archive_sha(name, version)

    def attempt(self, source: str, version: str, key: Path | None = None):
        return self.gokku(
            "plugins:publish",
            source,
            *("--index", str(self.folder), "--version", version),
            *("--sign-key", str(key or self.key)),
        )

    def publish(self, source: str, version: str, key: Path | None = None):
        result = self.attempt(source, version, key)
        assert result.code == 0, result.stderr
        return result

    def archive_sha(self, name: str, version: str) -> str:
        archive = self.github.folder / f"acme/gokku-{name}/archive/v{version}.tar.gz"
        return hashlib.sha256(archive.read_bytes()).hexdigest()


@pytest.fixture
def shelf(gokku, github, tmp_path, publisher) -> Shelf:
    folder = github.folder / "index"
    folder.mkdir()
    return Shelf(gokku, github, folder, f"{github.url}/index", publisher.key, tmp_path)


@pytest.fixture
def main_index(gokku, shelf, publisher) -> Shelf:
    """``main``: the HTTP index, trusting the publisher."""
    gokku.ok("plugins:index", "add", "main", shelf.url, "--default", input=publisher.allowed)
    return shelf


def listed(gokku) -> dict[str, dict]:
    return {r["name"]: r for r in json.loads(gokku.ok("plugins:list", "--format", "json").stdout)}


def refused(gokku, *args: str, input: bytes = b"") -> str:
    """The one line a refusal prints; the root must be as it was (the audit aside)."""
    before = gokku.snapshot()
    result = gokku(*args, input=input)
    assert result.code != 0, result.stderr
    assert gokku.snapshot() == before
    return error_line(result)


# --- publishing and installing -----------------------------------------------------------


def test_publish_search_info_and_add_through_an_http_index(gokku, main_index):
    sha = {v: main_index.release("demo", v) for v in ("1.0.0", "1.1.0", "2.0.0")}
    main_index.release("other", "0.3.0", gokku=">=9")

    manifest = json.loads((main_index.folder / "plugins/demo.json").read_text())
    assert sorted(manifest["versions"]) == ["1.0.0", "1.1.0", "2.0.0"]
    assert manifest["versions"]["1.1.0"]["sha256"] == sha["1.1.0"]
    assert (
        (main_index.folder / "plugins/demo.json.sig")
        .read_text()
        .startswith("-----BEGIN SSH SIGNATURE-----")
    )
    found = gokku.ok("plugins:search", "demo").stdout.splitlines()
    assert [line.split()[:2] for line in found] == [["NAME", "INDEX"], ["demo", "main"]]
    assert "other" in gokku.ok("plugins:search").stdout
    info = gokku.ok("plugins:info", "other").stdout
    assert info.splitlines()[3].split()[:5] == ["0.3.0", ">=9", "no", "(this", "is"]

    # Off a terminal the plan needs --yes, even for one plugin; nothing changes without.
    assert refused(gokku, "plugins:add", "demo@^1") == (
        " !     plugins:add demo: confirm the plan on a terminal (ssh -t) or add --yes"
    )
    added = gokku.ok("plugins:add", "demo@^1", "--yes")

    assert "Plan: install demo 1.1.0" in added.stderr
    assert gokku.ok("demo:which").stdout == "demo 1.1.0\n"
    record = listed(gokku)["demo"]
    assert (record["version"], record["index"], record["sha256"]) == ("1.1.0", "main", sha["1.1.0"])
    table = gokku.ok("plugins:list").stdout.splitlines()
    assert table[0].split()[:8] == [
        "NAME", "NAMESPACE", "VERSION", "PIN", "STATE", "INDEX", "COMMIT", "SHA256"
    ]  # fmt: skip
    assert table[1].split()[:8] == [
        "demo", "demo", "1.1.0", "-", "enabled", "main", record["commit"][:12], sha["1.1.0"][:12]
    ]  # fmt: skip

    # Asking again is a no-op; a newer range changes an installed plugin: asked first.
    assert "already installed" in gokku.ok("plugins:add", "demo@1.x").stderr
    line = refused(gokku, "plugins:add", "demo@2.0.0")
    assert "confirm the plan on a terminal (ssh -t) or add --yes" in line
    assert "Plan: upgrade demo 1.1.0 -> 2.0.0" in gokku.ok("plugins:add", "demo@2", "--yes").stderr
    assert gokku.ok("demo:which").stdout == "demo 2.0.0\n"


def test_a_git_index_is_cloned_and_fetched_again(gokku, shelf, publisher):
    shelf.release("demo", "1.0.0")
    run = [*GIT, "-C", str(shelf.folder)]
    subprocess.run([*run, "init", "-q", "-b", "main"], check=True)
    subprocess.run([*run, "add", "-A"], check=True)
    subprocess.run([*run, "commit", "-q", "-m", "index"], check=True)
    gokku.ok("plugins:index", "add", "repo", str(shelf.folder), input=publisher.allowed)

    assert "1.0.0" in gokku.ok("plugins:info", "demo").stdout
    shelf.release("demo", "1.2.0")
    subprocess.run([*run, "add", "-A"], check=True)
    subprocess.run([*run, "commit", "-q", "-m", "1.2.0"], check=True)
    gokku.ok("plugins:add", "demo", "--yes")

    assert listed(gokku)["demo"]["version"] == "1.2.0"
    assert listed(gokku)["demo"]["index"] == "repo"
    assert (gokku.root / "plugin-indexes/repo/cache/plugins/demo.json").is_file()
    assert gokku.ok("plugins:index", "list").stdout.split()[3:5] == ["repo", str(shelf.folder)]
    gokku.ok("plugins:index", "remove", "repo")
    assert not (gokku.root / "plugin-indexes/repo").exists()
    assert gokku.ok("plugins:index", "list").stdout.startswith("No plugin indexes")


def test_publish_refuses_what_would_mislead_servers(gokku, shelf, tmp_path):
    shelf.release("demo", "1.0.0")
    with_yml = tmp_path / "src/demo-1.0.0"
    line = error_line(shelf.attempt(str(with_yml), "1.0.0"))
    assert "publish a source servers can fetch" in line
    wrong = shelf.attempt("acme/gokku-demo@v1.0.0", "1.0.1")
    assert error_line(wrong) == " !     plugin.yml says version 1.0.0, not 1.0.1"
    # New bytes under a published version: refused, the signed manifest untouched.
    before = (shelf.folder / "plugins/demo.json").read_bytes()
    (with_yml / "commands/which").write_text("#!/bin/bash\necho changed\n")
    shelf.github.publish("acme", "gokku-demo", with_yml, ref="v1.0.0")
    again = shelf.attempt("acme/gokku-demo@v1.0.0", "1.0.0")
    assert "demo 1.0.0 is already published from other bytes: refused" in error_line(again)
    assert (shelf.folder / "plugins/demo.json").read_bytes() == before


# --- refusals: nothing installed ---------------------------------------------------------


def test_a_tampered_manifest_is_refused(gokku, main_index):
    main_index.release("demo", "1.0.0")
    path = main_index.folder / "plugins/demo.json"
    path.write_text(path.read_text().replace('"^0.1"', '"*"'))

    line = refused(gokku, "plugins:add", "demo@1.0.0")

    assert line == (" !     plugins/demo.json of index main does not match its signature: refused")
    assert plugin_entries(gokku) == []


def test_an_unsigned_manifest_or_an_unknown_signer_is_refused(gokku, main_index, stranger):
    main_index.release("demo", "1.0.0")
    main_index.release("solo", "1.0.0")
    (main_index.folder / "plugins/solo.json.sig").unlink()
    main_index.publish("acme/gokku-demo@v1.0.0", "1.0.0", key=stranger.key)  # re-signed

    assert refused(gokku, "plugins:add", "solo@1") == (
        " !     plugins/solo.json of index main is not signed: refused"
    )
    assert refused(gokku, "plugins:add", "demo@1") == (
        " !     plugins/demo.json of index main is not signed by a signer this index trusts: "
        "refused"
    )
    assert "not signed by a signer this index trusts" in refused(gokku, "plugins:search", "x")
    assert plugin_entries(gokku) == []


def test_an_archive_that_differs_from_the_signed_sha256_installs_nothing(
    gokku, main_index, tmp_path
):
    main_index.release("base", "1.0.0")
    signed = main_index.release("top", "1.0.0", requires={"base": "^1"})
    tree = tmp_path / "src/top-1.0.0"
    (tree / "commands/which").write_text("#!/bin/bash\necho swapped\n")
    main_index.github.publish("acme", "gokku-top", tree, ref="v1.0.0")

    line = refused(gokku, "plugins:add", "top", "--yes")

    served = main_index.archive_sha("top", "1.0.0")
    assert line == (
        f" !     top 1.0.0: the sha256 fetched ({served}) is not the one index main signed "
        f"({signed}): refused"
    )
    assert plugin_entries(gokku) == []  # base, fetched first, was not installed either


def test_a_version_without_the_hash_to_check_it_is_refused(gokku, main_index):
    """Signed, but naming no sha256 (an archive) or commit (a git source): nothing to
    check the fetched bytes against, so nothing is installed."""
    main_index.release("demo", "1.0.0")
    path = main_index.folder / "plugins/demo.json"
    manifest = json.loads(path.read_text())
    entry = manifest["versions"]["1.0.0"]
    for change, said in (
        ({"sha256": None}, "sha256"),
        ({"source": {"kind": "git", "location": "https://example.com/demo.git"}}, "commit"),
    ):
        entry_now = {**entry, "commit": None, **change}
        path.write_text(json.dumps({**manifest, "versions": {"1.0.0": entry_now}}))
        signing.sign(path, main_index.key)  # the index's owner signed it so

        assert refused(gokku, "plugins:add", "demo", "--yes") == (
            f" !     index main: demo 1.0.0 has no {said} to check it against: refused"
        )
    assert plugin_entries(gokku) == []


# --- versions and dependencies -----------------------------------------------------------


def test_requirements_are_resolved_shown_and_installed_together(gokku, main_index):
    for version in ("1.0.0", "1.2.0", "2.0.0"):
        main_index.release("base", version)
    main_index.release("top", "1.0.0", requires={"base": "^1"})

    line = refused(gokku, "plugins:add", "top")
    assert line == " !     plugins:add top: confirm the plan on a terminal (ssh -t) or add --yes"
    added = gokku.ok("plugins:add", "top", "--yes")

    assert "Plan: install base 1.2.0; install top 1.0.0" in added.stderr
    records = listed(gokku)
    assert {n: (r["version"], r["index"]) for n, r in records.items()} == {
        "base": ("1.2.0", "main"),
        "top": ("1.0.0", "main"),
    }
    # An installed plugin's range holds back what another plan would do to base.
    main_index.release("wide", "1.0.0", requires={"base": ">=2"})
    line = refused(gokku, "plugins:add", "wide", "--yes")
    assert line == (
        " !     conflict: base is required as >=2 by wide 1.0.0, ^1 by top 1.0.0; "
        "index main has 1.0.0, 1.2.0, 2.0.0: refused"
    )


def test_a_conflict_and_a_cycle_are_refused_naming_them(gokku, main_index):
    main_index.release("base", "1.0.0")
    main_index.release("base", "2.0.0")
    main_index.release("mid", "1.0.0", requires={"base": "^2"})
    main_index.release("top", "1.0.0", requires={"base": "~1.0", "mid": "^1"})
    main_index.release("ping", "1.0.0", requires={"pong": "^1"})
    main_index.release("pong", "1.0.0", requires={"ping": "^1"})

    conflict = refused(gokku, "plugins:add", "top", "--yes")
    cycle = refused(gokku, "plugins:add", "ping", "--yes")

    assert conflict == (
        " !     conflict: base is required as ~1.0 by top 1.0.0, ^2 by mid 1.0.0; "
        "index main has 1.0.0, 2.0.0: refused"
    )
    assert cycle == " !     dependency cycle: ping requires pong ^1, pong requires ping ^1: refused"
    assert plugin_entries(gokku) == []


def test_an_older_version_is_taken_when_the_newest_cannot_fit(gokku, main_index):
    main_index.release("base", "1.0.0")
    main_index.release("base", "2.0.0")
    main_index.release("keep", "1.0.0", requires={"base": "^1"})
    gokku.ok("plugins:add", "keep", "--yes")  # base 1.0.0 comes along
    for version, base in (("1.0.0", "^1"), ("1.1.0", "^1"), ("2.0.0", "^2")):
        main_index.release("web", version, requires={"base": base})
        main_index.release("mid", version, requires={"base": base})
    main_index.release("top", "1.0.0", requires={"mid": "*"})

    added = gokku.ok("plugins:add", "web", "--yes")
    assert "Plan: install web 1.1.0\n" in added.stderr
    deeper = gokku.ok("plugins:add", "top", "--yes")  # mid 2.0.0 would need base ^2
    assert "Plan: install mid 1.1.0; install top 1.0.0\n" in deeper.stderr
    assert {n: r["version"] for n, r in listed(gokku).items()} == {
        "web": "1.1.0",
        "base": "1.0.0",
        "keep": "1.0.0",
        "mid": "1.1.0",
        "top": "1.0.0",
    }
    # A set no choice satisfies is still refused naming the plugins and ranges.
    assert refused(gokku, "plugins:add", "web@2", "--yes") == (
        " !     conflict: base is required as ^2 by web 2.0.0, ^1 by keep 1.0.0, ^1 by mid "
        "1.1.0; index main has 1.0.0, 2.0.0: refused"
    )


def test_a_failure_midway_takes_back_what_the_plan_had_installed(gokku, main_index, tmp_path):
    main_index.release("base", "1.0.0")
    main_index.release("base", "1.2.0")
    main_index.release("top", "1.0.0", requires={"base": "^1.2"})
    gokku.ok("plugins:add", "base@1.0.0", "--yes")
    # A plugin already answers to "top": the plan fails at its last step.
    squatter = write_plugin(tmp_path / "squatter", namespace="top")
    gokku.ok("plugins:add", str(squatter))

    result = gokku("plugins:add", "top", "--yes")

    assert result.code == 1
    assert "Plan: upgrade base 1.0.0 -> 1.2.0; install top 1.0.0" in result.stderr
    assert result.stderr.splitlines()[-2:] == [
        " !     took back base: the plan is installed whole or not at all",
        " !     plugin namespace 'top' is taken by plugin 'squatter'",
    ]
    assert gokku.ok("base:which").stdout == "base 1.0.0\n"
    assert plugin_entries(gokku) == ["base", "squatter"]


def test_an_incompatible_gokku_range_is_refused_and_reported_by_doctor(gokku, main_index, tmp_path):
    main_index.release("future", "3.0.0", gokku=">=1.0")
    local = write_plugin(tmp_path / "later", namespace="later")
    (local / "plugin.yml").write_text("version: 1.0.0\ngokku: ^2\n")

    assert refused(gokku, "plugins:add", "future") == (
        " !     future 3.0.0 needs Gokku >=1.0; this Gokku is 0.1.0: refused"
    )
    assert refused(gokku, "plugins:add", str(local)) == (
        " !     later needs Gokku ^2; this Gokku is 0.1.0: refused"
    )
    main_index.release("now", "1.0.0", gokku="^0.1")
    gokku.ok("plugins:add", "now", "--yes")
    assert "plugin now needs" not in gokku.ok("doctor").stdout
    # As after an upgrade of Gokku past the range the plugin was installed with:
    record = gokku.root / "plugins/now/config.json"
    record.write_text(record.read_text().replace('"^0.1"', '"^0.0.9"'))
    report = gokku("doctor")
    assert "plugin now needs Gokku ^0.0.9; this Gokku is 0.1.0" in report.stdout + report.stderr


def test_unverified_sources_still_work_and_their_requirements_must_be_there(
    gokku, main_index, tmp_path
):
    main_index.release("base", "1.0.0")
    local = write_plugin(tmp_path / "extra", namespace="extra")
    (local / "plugin.yml").write_text("version: 0.1.0\nrequires: {base: ^1}\n")

    line = refused(gokku, "plugins:add", str(local))
    assert line == (
        " !     extra requires base ^1, and base is not installed; add it first "
        "(plugins:add base@^1): refused"
    )
    gokku.ok("plugins:add", "base", "--yes")
    gokku.ok("plugins:add", str(local))

    assert {n: r["index"] for n, r in listed(gokku).items()} == {
        "base": "main",
        "extra": "unverified",
    }


def test_index_commands_refuse_bad_input_with_one_line(gokku, shelf, publisher):
    assert "give the index's signers on stdin" in refused(
        gokku, "plugins:index", "add", "main", shelf.url
    )
    assert "not an allowed_signers line" in refused(
        gokku, "plugins:index", "add", "main", shelf.url, input=b"just words here\n"
    )
    assert "is not an http(s) URL or a git repository" in refused(
        gokku, "plugins:index", "add", "main", "ftp://x/y", input=publisher.allowed
    )
    gokku.ok("plugins:index", "add", "main", shelf.url, input=publisher.allowed)
    assert "already exists" in refused(
        gokku, "plugins:index", "add", "main", shelf.url, input=publisher.allowed
    )
    assert "no plugin index named 'nope'" in refused(gokku, "plugins:index", "remove", "nope")
    assert refused(gokku, "plugins:add", "ghost@^1") == (
        " !     no plugin index has 'ghost' (see: gokku plugins:search)"
    )
    assert "is not a version range" in refused(gokku, "plugins:add", "ghost@^^1")


# --- over SSH ----------------------------------------------------------------------------


def test_over_ssh_admins_use_indexes_and_publishing_stays_local(
    door: Door, gokku, shelf, publisher, keydir
):
    shelf.release("demo", "1.0.0")
    bob = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())

    member = door.ssh(f"plugins:index add main {shelf.url}", key=bob.path, input=publisher.allowed)
    assert member.stderr == " !     bob may not run plugins:index (admins only): ask an admin\n"
    local = door.ssh(f"plugins:index add here {shelf.folder}", input=publisher.allowed)
    assert local.stderr == (
        " !     over SSH an index is an http(s) or remote git URL, not a server path\n"
    )
    added = door.ssh(f"plugins:index add main {shelf.url} --default", input=publisher.allowed)
    assert added.code == 0, added.stderr
    assert door.ssh("plugins:add demo@^1").stderr.splitlines() == [
        "-----> Plan: install demo 1.0.0",
        " !     plugins:add demo: confirm the plan on a terminal (ssh -t) or add --yes",
    ]
    installed = door.ssh("plugins:add demo@^1 --yes")
    assert installed.code == 0, installed.stderr
    assert door.ssh("demo:which").stdout == "demo 1.0.0\n"
    # On a terminal the plan is asked about: "n" changes nothing, "y" installs it.
    shelf.release("demo", "1.1.0", requires={"base": "^1"})
    shelf.release("base", "1.0.0")
    declined = door.ssh("plugins:update demo", "-tt", input=b"n\n")
    assert declined.code == 1 and "not confirmed: nothing was changed" in declined.stdout
    assert door.ssh("demo:which").stdout == "demo 1.0.0\n"
    accepted = door.ssh("plugins:update demo", "-tt", input=b"y\n")
    assert accepted.code == 0, accepted.stdout
    assert "Plan: install base 1.0.0; upgrade demo 1.0.0 -> 1.1.0" in accepted.stdout
    assert door.ssh("demo:which").stdout == "demo 1.1.0\n"
    publish = door.ssh(
        f"plugins:publish acme/gokku-demo@v1.0.0 --index /tmp --version 1.0.0 --sign-key {bob.path}"
    )
    assert (publish.code, publish.stderr) == (
        1,
        " !     plugins:publish is not available over SSH\n",
    )


# --- outdated and updates ----------------------------------------------------------------


def test_outdated_and_update_all_stay_within_the_ranges(gokku, main_index, tmp_path):
    main_index.release("base", "1.0.0")
    main_index.release("top", "1.0.0", requires={"base": "~1.0"})
    main_index.release("solo", "1.0.0")
    gokku.ok("plugins:add", "top", "--yes")
    gokku.ok("plugins:add", "solo", "--yes")
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "loose", namespace="loose")))
    assert gokku.ok("plugins:outdated").stdout == "All plugins from indexes are up to date\n"
    for name, version in (("base", "1.0.5"), ("base", "1.1.0"), ("solo", "2.0.0")):
        main_index.release(name, version)

    outdated = json.loads(gokku.ok("plugins:outdated", "--format", "json").stdout)
    assert [(r["name"], r["installed"], r["allowed"], r["latest"]) for r in outdated] == [
        ("base", "1.0.0", "1.0.5", "1.1.0"),
        ("solo", "1.0.0", "2.0.0", "2.0.0"),
    ]
    # A pin holds its plugin: update --all leaves it, and naming it is refused.
    gokku.ok("plugins:pin", "solo")
    assert refused(gokku, "plugins:update", "solo") == (
        " !     plugin 'solo' is pinned at 1.0.0; unpin it first: gokku plugins:unpin solo"
    )
    pinned = gokku.ok("plugins:update", "--all")
    assert "Plan: upgrade base 1.0.0 -> 1.0.5\n" in pinned.stderr
    assert gokku.ok("solo:which").stdout == "solo 1.0.0\n"
    gokku.ok("plugins:unpin", "solo")
    updated = gokku.ok("plugins:update", "--all")

    assert "Plan: upgrade solo 1.0.0 -> 2.0.0" in updated.stderr
    assert gokku.ok("base:which").stdout == "base 1.0.5\n"
    assert gokku.ok("solo:which").stdout == "solo 2.0.0\n"
    assert listed(gokku)["loose"]["index"] == "unverified"
    assert "up to date" in gokku.ok("plugins:update", "solo").stderr
    assert refused(gokku, "plugins:update", "solo", "--ref", "v1.0.0") == (
        " !     plugin solo comes from an index, which --ref would bypass (unsigned, unchecked): "
        "update it through the index (plugins:add solo@VERSION), or plugins:remove solo then "
        "plugins:add the source"
    )
    # A newer top that needs a plugin not yet installed: more than an update, asked first.
    main_index.release("extra", "1.0.0")
    main_index.release("top", "1.1.0", requires={"base": "^1", "extra": "^1"})
    assert refused(gokku, "plugins:update", "top") == (
        " !     plugins:update top does more than update those: confirm the plan on a "
        "terminal (ssh -t) or add --yes"
    )
    assert "usage" in refused(gokku, "plugins:update", "top", "--all")


def test_a_pin_no_version_meets_holds_its_plugin_and_not_the_others(gokku, main_index):
    main_index.release("solo", "1.0.0")
    main_index.release("base", "1.0.0")
    gokku.ok("plugins:add", "solo", "--yes")
    gokku.ok("plugins:add", "base", "--yes")
    gokku.ok("plugins:pin", "solo", "~3.0")  # ahead of a release the index does not have
    main_index.release("solo", "1.1.0")
    main_index.release("base", "1.1.0")

    outdated = json.loads(gokku.ok("plugins:outdated", "--format", "json").stdout)
    assert [(r["name"], r["installed"], r["allowed"], r["latest"]) for r in outdated] == [
        ("base", "1.0.0", "1.1.0", "1.1.0"),
        ("solo", "1.0.0", "1.0.0", "1.1.0"),
    ]
    updated = gokku.ok("plugins:update", "--all")
    assert " !     solo stays at 1.0.0: no version meets its pin ~3.0 (" in updated.stderr
    assert "Plan: upgrade base 1.0.0 -> 1.1.0\n" in updated.stderr
    assert gokku.ok("base:which").stdout == "base 1.1.0\n"
    assert gokku.ok("solo:which").stdout == "solo 1.0.0\n"
    assert refused(gokku, "plugins:update", "solo").startswith(
        " !     plugin 'solo' stays at 1.0.0: no version meets its pin ~3.0 ("
    )
    # Once the index has a version within it, the pin moves the plugin there.
    main_index.release("solo", "3.0.1")
    assert "Plan: upgrade solo 1.0.0 -> 3.0.1" in gokku.ok("plugins:update", "--all").stderr
    assert gokku.ok("solo:which").stdout == "solo 3.0.1\n"


def test_a_range_pin_is_moved_within_and_a_version_pin_stays(gokku, main_index):
    main_index.release("solo", "1.0.0")
    main_index.release("keep", "1.0.0")
    gokku.ok("plugins:add", "solo", "--yes")
    gokku.ok("plugins:add", "keep", "--yes")
    for version in ("1.0.3", "1.1.0", "2.0.0"):
        main_index.release("solo", version)
    main_index.release("keep", "1.0.1")
    assert "only within that range" in gokku.ok("plugins:pin", "solo", "~1.0").stderr
    assert "updates leave it alone" in gokku.ok("plugins:pin", "keep").stderr

    outdated = json.loads(gokku.ok("plugins:outdated", "--format", "json").stdout)
    assert [(r["name"], r["installed"], r["allowed"], r["latest"]) for r in outdated] == [
        ("keep", "1.0.0", "1.0.0", "1.0.1"),
        ("solo", "1.0.0", "1.0.3", "2.0.0"),
    ]
    updated = gokku.ok("plugins:update", "--all")
    assert "Plan: upgrade solo 1.0.0 -> 1.0.3\n" in updated.stderr
    assert {n: r["version"] for n, r in listed(gokku).items()} == {"keep": "1.0.0", "solo": "1.0.3"}
    assert gokku.ok("plugins:update", "--all").stderr == (
        "-----> solo: up to date (keep: pinned at a version)\n"
    )
    gokku.ok("plugins:pin", "solo", "^1")
    assert "Plan: upgrade solo 1.0.3 -> 1.1.0" in gokku.ok("plugins:update", "solo").stderr
    assert gokku.ok("solo:which").stdout == "solo 1.1.0\n"
    assert refused(gokku, "plugins:update", "keep") == (
        " !     plugin 'keep' is pinned at 1.0.0; unpin it first: gokku plugins:unpin keep"
    )
    gokku.ok("plugins:pin", "solo")
    assert gokku.ok("plugins:update", "--all").stderr == (
        "-----> No plugin from an index to update (keep, solo: pinned at a version)\n"
    )
