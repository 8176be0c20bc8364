"""``gokku doctor`` and the commands that finish what a killed run left half-done.

No command is killed here at a chosen point: that would take hooks in the code. Instead
each half-done state a kill between two writes leaves is made on disk directly (the
writes are ordered, so these are the only states there are), and doctor, doctor --fix
and the next command are shown to handle it.
"""

import glob
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from bundled_support import reachable_root
from conftest import REPO, Gokku, write_plugin
from sshlab import free_port, make_key, stopping, wait_for_port

OLD = time.time() - 3600
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
    assert report.code == 1 and report.err == b""
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
    port = free_port()
    errors = tmp_path / "serve.err"
    with open(errors, "wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-P", "-m", "gokku", "serve", "--port", str(port)],
            env=gokku.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        with stopping(proc):
            wait_for_port(port, proc)
    assert (
        " !     doctor: plugin u is missing: an update was cut off between its two renames; "
        f"its previous copy is in plugins/{KILLED_UPDATE}/previous (repair: gokku doctor --fix)"
    ) in errors.read_text()
    assert not (gokku.root / "plugins" / "u").exists()


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
    assert (report.code, report.err) == (1, b"")
    assert report.stdout == (
        "services/.held-ports.json is not a record of port holds (port: until): remove it "
        "(holds are taken again at the next services:create)\n"
    )
    taken = gokku("services:next-port", "9300")
    assert taken.code == 1 and taken.stderr.count("\n") == 1 and "Traceback" not in taken.stderr
    assert gokku("doctor", "--fix").stdout == f"fixed: {report.stdout.strip()} (removed)\n"
    assert not path.exists()
    assert gokku.ok("services:next-port", "9300").stdout.strip().isdigit()
