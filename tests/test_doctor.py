"""``gokku doctor`` and the commands that finish what a killed run left half-done.

No command is killed here at a chosen point: that would take hooks in the code. Instead
each half-done state a kill between two writes leaves is made on disk directly (the
writes are ordered, so these are the only states there are), and doctor, doctor --fix
and the next command are shown to handle it.
"""

import fcntl
import glob
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bundled_support import reachable_root
from conftest import REPO, Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door
from sshlab import make_key, stopping, wait_for_port

from gokku import sandbox

OLD = time.time() - 3600
# What doctor says on stderr on a healthy host: nothing, but as root (as the tests run)
# that the sandbox refuses apps' code.
WARNED = (
    f" !     {sandbox.AS_ROOT}: it refuses to run apps' code; {sandbox.AS_ROOT_REMEDY}\n".encode()
    if os.geteuid() == 0
    else b""
)
KILLED_UPDATE = ".staging-u-0badc0de"


def _age(*paths: Path) -> None:
    for path in paths:
        for each in [path, *path.rglob("*")] if path.is_dir() else [path]:
            os.utime(each, (OLD, OLD))


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if "locks" not in p.parts}


@pytest.fixture
def estate(gokku: Gokku, tmp_path: Path) -> Path:
    """Plugins t and u (from local paths), a service of t, an app, an admin key."""
    for name in ("t", "u"):
        gokku.ok("plugins:add", str(write_plugin(tmp_path / "src" / name)), "--name", name)
    gokku.ok("services:create", "t", "--name", "db")
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "-a", "api", "K=v")
    key = make_key(tmp_path, "alice")
    gokku.ok("ssh-keys:add", "alice", "--role", "admin", input=key.public.encode())
    return key.path


def _kill_update(gokku: Gokku, name: str = "u", staging: str = KILLED_UPDATE) -> None:
    """What plugins:update leaves when killed between its renames: the old tree aside."""
    (gokku.root / "plugins" / staging).mkdir()
    (gokku.root / "plugins" / name).rename(gokku.root / "plugins" / staging / "previous")


def test_a_clean_state_is_reported_clean(gokku: Gokku, estate: Path) -> None:
    result = gokku.ok("doctor")
    assert result.stdout == "ok: nothing to report\n"


def test_every_leftover_is_one_line_and_fix_repairs_what_is_safe(
    gokku: Gokku, estate: Path
) -> None:
    root = gokku.root
    authorized = (root / "ssh" / "authorized_keys").read_bytes()
    env = root / "apps" / "api" / "shared"
    (env / ".env.a1b2c3.tmp").write_text("K=half")
    (env / ".env.d4e5f6.tmp").write_text("K=new")  # young: a write still running
    staging = root / "plugins" / ".staging-t-12345678"
    (staging / "fetched").mkdir(parents=True)
    incoming = root / "repos" / "api.git" / "objects" / "tmp_objdir-incoming-Xy12"
    (incoming / "pack").mkdir(parents=True)
    (incoming / "pack" / "tmp_pack_1").write_bytes(b"\0" * 1000)
    (root / "ssh" / "authorized_keys").unlink()  # ssh-keys:add killed after keys.json
    _kill_update(gokku)
    (root / "services" / "ghost").mkdir()  # services:create killed after its mkdir
    (root / "services" / "junk").mkdir()
    (root / "services" / "junk" / "data").write_text("someone's")
    _age(env / ".env.a1b2c3.tmp", staging, incoming)

    before = (_tree(root), gokku.snapshot())
    report = gokku("doctor")
    assert report.code == 1 and report.err == WARNED
    expected = [
        "apps/api/shared/.env.a1b2c3.tmp: temp file of an interrupted write",
        "plugins/.staging-t-12345678: staging of an interrupted plugin command",
        f"plugin u is missing: an update was cut off between its two renames; its previous "
        f"copy is in plugins/{KILLED_UPDATE}/previous",
        "repos/api.git/objects/tmp_objdir-incoming-Xy12: objects of a push that was cut off",
        "ssh/authorized_keys is out of step with the key registry (ssh/keys.json)",
        "services/ghost: empty, without config.json",
        "services/junk: holds files but no config.json: look, then move it away",
    ]
    assert report.stdout.splitlines() == expected
    assert (_tree(root), gokku.snapshot()) == before  # a report changes nothing

    fixed = gokku("doctor", "--fix")
    assert fixed.code == 1  # junk is left for a human
    assert fixed.stdout.splitlines() == [
        f"fixed: {expected[0]} (removed)",
        f"fixed: {expected[1]} (removed)",
        f"fixed: {expected[2]} (put its previous copy back)",
        f"fixed: {expected[3]} (removed)",
        f"fixed: {expected[4]} (rewrote it from the registry)",
        f"fixed: {expected[5]} (removed)",
        f"not fixed: {expected[6]}",
    ]
    assert (root / "ssh" / "authorized_keys").read_bytes() == authorized
    assert gokku.ok("u:info", "x").stdout == "info x\n"
    assert (env / ".env.d4e5f6.tmp").exists() and not (env / ".env.a1b2c3.tmp").exists()
    assert not staging.exists() and not incoming.exists() and not (root / "services/ghost").exists()
    assert sorted(p.name for p in (root / "plugins").iterdir()) == ["t", "u"]

    (root / "services" / "junk" / "data").unlink()
    (root / "services" / "junk").rmdir()
    (env / ".env.d4e5f6.tmp").unlink()
    assert gokku.ok("doctor").stdout == "ok: nothing to report\n"


def test_adding_a_registered_key_again_repairs_authorized_keys(gokku: Gokku, estate: Path) -> None:
    path = gokku.root / "ssh" / "authorized_keys"
    written = path.read_bytes()
    public = Path(str(estate) + ".pub").read_bytes()
    for damage in (path.unlink, lambda: path.write_bytes(b"")):
        damage()
        again = gokku.ok("ssh-keys:add", "alice", "--role", "admin", input=public)
        assert "ssh/authorized_keys was out of step with the registry" in again.stderr
        assert again.stderr.startswith(" !     key alice (SHA256:")
        assert path.read_bytes() == written
    quiet = gokku.ok("ssh-keys:add", "alice", "--role", "admin", input=public)
    assert quiet.stderr.startswith("-----> Key alice (SHA256:") and "already" in quiet.stderr


@pytest.mark.parametrize("verb", ["plugins:update", "plugins:add"])
def test_the_next_plugin_command_puts_back_a_half_updated_plugin(
    gokku: Gokku, estate: Path, tmp_path: Path, verb: str
) -> None:
    _kill_update(gokku)
    assert gokku("u:info", "x").code == 127  # what a user sees meanwhile
    args = ["u"] if verb == "plugins:update" else [str(tmp_path / "src" / "u"), "--name", "u"]
    result = gokku.ok(verb, *args)
    assert (
        " !     plugin u was missing after an update cut off halfway: put its previous copy "
        f"back from plugins/{KILLED_UPDATE}/previous\n"
    ) in result.stderr
    assert gokku.ok("u:info", "x").stdout == "info x\n"
    assert sorted(p.name for p in (gokku.root / "plugins").iterdir()) == ["t", "u"]


def test_a_plugin_command_leaves_the_staging_of_a_longer_name_alone(
    gokku: Gokku, estate: Path, tmp_path: Path
) -> None:
    """``.staging-t-*`` matched ``.staging-t-x-*`` too: plugin t's update deleted the
    only copy of a half-updated plugin t-x."""
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "src" / "t-x")), "--name", "t-x")
    _kill_update(gokku, "t-x", ".staging-t-x-0badc0de")
    gokku.ok("plugins:update", "t")
    assert (gokku.root / "plugins" / ".staging-t-x-0badc0de" / "previous").is_dir()
    gokku.ok("plugins:update", "t-x")
    assert gokku.ok("t-x:info", "y").stdout == "info y\n"


def test_services_start_all_reports_the_cheap_checks(gokku: Gokku, estate: Path) -> None:
    (gokku.root / "ssh" / "authorized_keys").unlink()
    result = gokku.ok("services:start", "--all")
    assert (
        " !     doctor: ssh/authorized_keys is out of step with the key registry (ssh/keys.json) "
        "(repair: gokku doctor --fix)\n"
    ) in result.stderr
    assert not (gokku.root / "ssh" / "authorized_keys").exists()  # reported, not repaired


def test_serve_reports_the_cheap_checks_when_it_starts(
    gokku: Gokku, estate: Path, tmp_path: Path
) -> None:
    _kill_update(gokku)
    errors = tmp_path / "serve.err"
    with open(errors, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "gokku", "serve", "--port", "0"],
            env=gokku.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        with stopping(proc):
            wait_for_port(proc)
    assert (
        " !     doctor: plugin u is missing: an update was cut off between its two renames; "
        f"its previous copy is in plugins/{KILLED_UPDATE}/previous (repair: gokku doctor --fix)"
    ) in errors.read_text()
    assert not (gokku.root / "plugins" / "u").exists()


@pytest.mark.serial  # a real postgres on the first free port from 5433, as the bundled tests' own
def test_a_fresh_install_with_a_bundled_postgres_service_has_nothing_to_report() -> None:
    """The bundled postgres holds its port while it starts its server, then records it:
    the create consumes the hold, and doctor has nothing to say about a healthy install."""
    if not glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        pytest.skip("PostgreSQL server binaries are not installed")
    with reachable_root() as gk:
        gk.ok("plugins:add", "postgres")
        gk.ok("services:create", "postgres", "--name", "db")
        port = gk.ok("services:config-get", "db", "port").stdout.strip()
        holds = json.loads((gk.root / "services" / ".held-ports.json").read_text())
        assert port not in holds
        assert gk("doctor").stdout == "ok: nothing to report\n"


def test_port_holds_that_hold_nothing_are_no_finding_and_a_create_drops_them(
    gokku: Gokku, estate: Path
) -> None:
    gokku.ok("services:config-set", "db", "port=9101")
    path = gokku.root / "services" / ".held-ports.json"
    now = time.time()
    path.write_text(json.dumps({"9100": now - 5, "9101": now + 500, "9102": now + 500}))
    assert gokku.ok("doctor").stdout == "ok: nothing to report\n"
    gokku.ok("services:create", "t", "--name", "db2")
    assert list(json.loads(path.read_text())) == ["9102"]  # a create still running keeps it


def test_an_unreadable_port_hold_file_is_one_finding_and_fix_removes_it(
    gokku: Gokku, estate: Path
) -> None:
    path = gokku.root / "services" / ".held-ports.json"
    path.write_text("[]\n")
    report = gokku("doctor")
    assert (report.code, report.err) == (1, WARNED)
    assert report.stdout == (
        "services/.held-ports.json is not a record of port holds (port: until): remove it "
        "(holds are taken again at the next services:create)\n"
    )
    taken = gokku("services:next-port", "9300")
    assert taken.code == 1 and taken.stderr.count("\n") == 1 and "Traceback" not in taken.stderr
    assert gokku("doctor", "--fix").stdout == f"fixed: {report.stdout.strip()} (removed)\n"
    assert not path.exists()
    assert gokku.ok("services:next-port", "9300").stdout.strip().isdigit()


def _record(gokku: Gokku, service: str) -> Path:
    return gokku.root / "services" / service / "config.json"


def _edit(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _findings(gokku: Gokku) -> list[str]:
    """doctor's report, checked to change nothing and to fail (something was found)."""
    before = (_tree(gokku.root), gokku.snapshot())
    report = gokku("doctor")
    assert (report.code, report.err) == (1, WARNED), report
    assert (_tree(gokku.root), gokku.snapshot()) == before
    return report.stdout.splitlines()


def test_the_staging_of_a_cut_off_create_is_found_and_removed(gokku: Gokku, estate: Path) -> None:
    staging = gokku.root / "services" / ".creating-db2-k3x_9q0a"
    staging.mkdir()
    (staging / "config.json").write_text('{"name": "db2"}')
    _age(staging)
    line = "services/.creating-db2-k3x_9q0a: staging of an interrupted services:create"
    assert _findings(gokku) == [line]
    assert gokku("doctor", "--fix").stdout == f"fixed: {line} (removed)\n"
    assert not staging.exists() and gokku.ok("doctor").stdout == "ok: nothing to report\n"


def test_a_service_stuck_creating_is_found_unless_its_create_still_runs(
    gokku: Gokku, estate: Path
) -> None:
    _edit(_record(gokku, "db"), lambda r: r.update(state="creating"))
    line = (
        "service db is stuck creating: its create was cut off "
        "(undo it: gokku services:destroy db --force)"
    )
    assert _findings(gokku) == [line]
    fixed = gokku("doctor", "--fix")  # undoing runs the plugin's uninstall: not doctor's job
    assert (fixed.code, fixed.stdout) == (1, f"not fixed: {line}\n")
    # A create still running holds the service's lock: that one is no finding.
    (gokku.root / "locks").mkdir(exist_ok=True)
    with open(gokku.root / "locks" / "service-db.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert gokku.ok("doctor").stdout == "ok: nothing to report\n"
    gokku.ok("services:destroy", "db", "--force")
    assert gokku.ok("doctor").stdout == "ok: nothing to report\n"


def test_links_out_of_step_with_the_env_are_found_and_finished(gokku: Gokku, estate: Path) -> None:
    root = gokku.root
    gokku.ok("services:env-set", "db", "DB_URL=postgres://db", "DB_PORT=5999")
    for app in ("web", "jobs"):
        gokku.ok("apps:create", app)
    for app in ("api", "web", "jobs"):
        gokku.ok("services:link", "db", "-a", app)
    api, web = (root / "apps" / app / "shared" / ".env" for app in ("api", "web"))
    api.write_text("K=v\n")  # link killed after its record was written, before the .env

    def cut_off(record: dict) -> None:
        next(x for x in record["links"] if x["app"] == "api")["pending"] = True
        record["links"].append({"app": "gone", "env": "shared", "keys": ["DB_URL"]})

    _edit(_record(gokku, "db"), cut_off)
    web.write_text(web.read_text().replace("DB_PORT=5999\n", ""))  # a hand edit
    expected = [
        "service db's link to app api (shared) was cut off halfway",
        "service db's link to app web (shared): DB_PORT missing from apps/web/shared/.env",
        "service db's link to app gone (shared): the app does not exist",
    ]
    assert _findings(gokku) == expected
    fixed = gokku.ok("doctor", "--fix")
    assert fixed.stdout.splitlines() == [
        f"fixed: {expected[0]} (wrote DB_PORT, DB_URL)",
        f"fixed: {expected[1]} (wrote DB_PORT, DB_URL)",
        f"fixed: {expected[2]} (forgot the link)",
    ]
    for app in ("api", "web", "jobs"):
        variables = gokku.ok("config:list", "-a", app, "--format", "json").stdout
        assert json.loads(variables) | {"K": "v"} == {
            "K": "v",
            "DB_URL": "postgres://db",
            "DB_PORT": "5999",
        }
    record = json.loads(_record(gokku, "db").read_text())
    assert sorted(x["app"] for x in record["links"]) == ["api", "jobs", "web"]
    assert not any("pending" in x for x in record["links"])
    assert gokku.ok("doctor").stdout == "ok: nothing to report\n"


def test_a_repository_of_no_app_is_found_and_removed(gokku: Gokku, estate: Path) -> None:
    repo = gokku.root / "repos" / "old.git"
    subprocess.run(["git", "init", "-q", "--bare", str(repo)], check=True)
    line = "repos/old.git: left by a destroy or create of app old that was cut off"
    assert _findings(gokku) == [line]
    assert gokku("doctor", "--fix").stdout.startswith(f"fixed: {line} (removed repos/old.git")
    assert not repo.exists()
    gokku.ok("apps:create", "old")
    assert gokku.ok("doctor").stdout == "ok: nothing to report\n"


def test_grants_on_names_that_do_not_exist_are_found_and_dropped(
    gokku: Gokku, estate: Path, tmp_path: Path
) -> None:
    bob = make_key(tmp_path, "bob")
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
    gokku.ok("access:grant", "bob", "app:api")
    gokku.ok("access:grant", "bob", "service:db", "--read")
    registry = gokku.root / "ssh" / "keys.json"
    _edit(registry, lambda r: r["keys"][-1]["grants"].update({"app:gone": "write"}))
    shutil.rmtree(gokku.root / "services" / "db")  # a destroy cut off before the grants
    expected = [
        "key bob has write access to app:gone, which does not exist",
        "key bob has read access to service:db, which does not exist",
    ]
    assert _findings(gokku) == expected
    fixed = gokku("doctor", "--fix")
    assert fixed.stdout.splitlines() == [
        f"fixed: {line} (dropped the grants on it)" for line in expected
    ]
    assert json.loads(registry.read_text())["keys"][-1]["grants"] == {"app:api": "write"}
    gokku.ok("services:create", "t", "--name", "db")
    assert gokku.ok("doctor").stdout == "ok: nothing to report\n"


KEYS = "ssh/keys.json is not a key registry ({}): restore it from a backup"
RECORD = "services/db/config.json is not a service record ({}): restore it"
BAD_JSON = "{} is not valid JSON (Expecting property name enclosed in double quotes at line 1)"
# file, what it holds, the finding, a command that reads it (it fails with that line)
UNREADABLE = {
    "keys []": (
        "ssh/keys.json",
        "[]\n",
        KEYS.format("not an object with a list of keys"),
        ["ssh-keys:list"],
    ),
    "keys fields": (
        "ssh/keys.json",
        '{"version": 2, "keys": [{"name": "a"}]}',
        KEYS.format("a key lacks its name, type, data or fingerprint"),
        ["access:list"],
    ),
    "service []": (
        "services/db/config.json",
        "[]\n",
        RECORD.format("not a JSON object"),
        ["services:info", "db"],
    ),
    "service links": (
        "services/db/config.json",
        '{"plugin": "t", "links": "api"}',
        RECORD.format("links is not a list of {app, env, keys}"),
        ["services:list"],
    ),
    "service json": (
        "services/db/config.json",
        "{",
        BAD_JSON.format("services/db/config.json"),
        ["services:info", "db"],
    ),
    "plugin json": (
        "plugins/t/config.json",
        "{",
        BAD_JSON.format("plugins/t/config.json"),
        ["t:info", "x"],
    ),
    "plugin commands": (
        "plugins/t/config.json",
        '{"name": "t", "commands_io": {"info": "tty"}}',
        "plugins/t/config.json is not a plugin record "
        "(commands_io is not a map of commands to settings)",
        [],
    ),
    "plugin []": (
        "plugins/t/config.json",
        "[]",
        "plugins/t/config.json is not a plugin record (not a JSON object)",
        [],
    ),
}


@pytest.mark.parametrize("case", UNREADABLE, ids=UNREADABLE)
def test_an_unreadable_registry_is_one_finding_and_one_line_for_commands(
    gokku: Gokku, estate: Path, case: str
) -> None:
    rel, text, line, command = UNREADABLE[case]
    (gokku.root / rel).write_text(text)
    assert _findings(gokku) == [line]
    before = gokku.snapshot()
    fixed = gokku("doctor", "--fix")
    assert (fixed.code, fixed.stdout, fixed.err) == (1, f"not fixed: {line}\n", WARNED)
    assert gokku.snapshot() == before
    if command:
        failed = gokku(*command)
        assert failed.code == 1 and failed.stderr == f" !     {gokku.root}/{line}\n"


def test_an_original_gokku_record_is_found_and_migrated_with_its_links(
    gokku: Gokku, estate: Path, tmp_path: Path
) -> None:
    """As the original wrote it: linked_apps and a config, the variables it derived for
    redis in the app's shared .env; saved as it is, the links would be lost."""
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "src" / "redis")), "--name", "redis")
    (gokku.root / "services" / "cache").mkdir()
    original = {
        "name": "cache",
        "plugin": "redis",
        "container_id": "c0ffee",
        "running": True,
        "linked_apps": ["api", "gone"],
        "created_at": "2025-01-02T03:04:05Z",
        "config": {"password": "pw", "port": "6390"},
    }
    _record(gokku, "cache").write_text(json.dumps(original, separators=(",", ":")))
    derived = {
        "REDIS_URL": "redis://:pw@localhost:6390",
        "REDIS_HOST": "localhost",
        "REDIS_PORT": "6390",
        "REDIS_PASSWORD": "pw",
    }
    env = gokku.root / "apps" / "api" / "shared" / ".env"
    env.write_text("K=v\n" + "".join(f"{k}={v}\n" for k, v in derived.items()))
    line = (
        "service cache has a record of the original Gokku (linked_apps, no links): "
        "its links are unknown to unlink and destroy"
    )
    assert _findings(gokku) == [line]
    fixed = gokku.ok("doctor", "--fix")
    assert fixed.stdout == f"fixed: {line} (wrote it in the current form, links recorded for api)\n"
    record = json.loads(_record(gokku, "cache").read_text())
    assert record["links"] == [{"app": "api", "env": "shared", "keys": sorted(derived)}]
    assert record["linked_apps"] == ["api"] and record["config"] == original["config"]
    assert gokku.ok("doctor").stdout == "ok: nothing to report\n"
    unlinked = gokku.ok("services:unlink", "cache", "-a", "api")
    assert "REDIS_URL" in unlinked.stderr
    assert env.read_text() == "K=v\n"


def test_an_unreadable_key_registry_refuses_every_login_without_a_traceback(
    door: Door, gokku: Gokku
) -> None:
    """The OpenSSH door says why (its forced command reads the registry after the login);
    the embedded one reads it to authenticate, before there is anyone to tell."""
    registry = gokku.root / "ssh" / "keys.json"
    kept = registry.read_bytes()
    registry.write_text("[]\n")
    refused = door.ssh("version")
    assert refused.out == b"" and b"Traceback" not in refused.err
    if door.kind == "openssh":
        assert refused.code == 1 and refused.stderr == (
            f" !     {registry} is not a key registry (not an object with a list of keys): "
            "restore it from a backup\n"
        )
    else:
        assert refused.code == 255  # no key was accepted
    registry.write_bytes(kept)
    assert door.ssh("version").code == 0


def test_a_promotion_cut_off_before_the_env_is_finished_like_the_promotion(
    gokku: Gokku, estate: Path
) -> None:
    """Both links are recorded pending, the promoted one claiming the names the demoted
    one wrote: finishing the promoted one first, then the demoted one must not drop them."""
    gokku.ok("services:create", "t", "--name", "alt")  # sorts before db: finished first
    gokku.ok("services:env-set", "db", "PG_URL=one")
    gokku.ok("services:env-set", "alt", "PG_URL=two")
    gokku.ok("services:link", "db", "-a", "api")
    gokku.ok("services:link", "alt", "-a", "api", "--alias", "ALT")
    env = gokku.root / "apps" / "api" / "shared" / ".env"
    before = env.read_bytes()
    gokku.ok("services:promote", "alt", "-a", "api")
    promoted = (
        env.read_bytes(),
        _record(gokku, "db").read_bytes(),
        _record(gokku, "alt").read_bytes(),
    )
    # What promote leaves when killed after recording the links, before the .env.
    env.write_bytes(before)
    _edit(
        _record(gokku, "db"),
        lambda r: r["links"][0].update(keys=["DB_URL", "PG_URL"], pending=True),
    )
    _edit(_record(gokku, "alt"), lambda r: r["links"][0].update(pending=True))
    assert _findings(gokku) == [
        "service alt's link to app api (shared) was cut off halfway",
        "service db's link to app api (shared) was cut off halfway",
    ]
    gokku.ok("doctor", "--fix")
    assert env.read_bytes() == promoted[0]
    assert json.loads(_record(gokku, "db").read_text())["links"] == json.loads(promoted[1])["links"]
    assert (
        json.loads(_record(gokku, "alt").read_text())["links"] == json.loads(promoted[2])["links"]
    )
