"""What both bundled plugins share: their shape, and coming back after a reboot."""

import json
import shutil
from pathlib import Path

import pytest
from bundled_support import reachable_root, server_pid, wait_gone
from conftest import write_plugin

from gokku.dispatcher import command_io
from gokku.paths import Root

BUNDLED = Path(__file__).resolve().parent.parent / "gokku" / "bundled"


# The commands of one plugin whose access is not the default (write): the backup
# commands beyond the schedules', and postgres's move of old services onto an apps' role.
PLUGIN_ACCESS = {
    "postgres": {
        "app-role": {"access": "admin"},
        "backups": {"access": "read"},
        "backup-check": {"access": "read"},
        "backup-export": {"stdout": "binary", "access": "read"},
        "backup-set-encryption": {"stdin": "data"},
        # list is read level; add (keys on stdin) and remove check for write themselves.
        "backup-target": {"access": "read", "stdin": "any"},
        "restore": {"access": "write"},
    },
    "redis": {"backups": {"access": "read"}, "restore": {"access": "admin"}},
}


@pytest.mark.parametrize("name", ["postgres", "redis"])
def test_plugin_follows_the_contract_and_declares_its_streams(gokku, name: str) -> None:
    assert gokku.ok("plugins:validate", str(BUNDLED / name)).stdout == (
        f"ok: {BUNDLED / name} follows the plugin contract\n"
    )
    gokku.ok("plugins:add", name)
    listed = json.loads(gokku.ok("plugins:list", "--format", "json").stdout)
    assert listed[0]["version"] == "1.0.0"
    record = json.loads((gokku.root / "plugins" / name / "config.json").read_text())
    declared = record["commands_io"]
    # Every command but help has the usage and summary its --help prints.
    scripts = {path.name for path in (BUNDLED / name / "commands").iterdir()} - {"name", "help"}
    assert {c for c, s in declared.items() if s.get("usage") and s.get("summary")} == scripts
    streams = {
        command: {k: v for k, v in settings.items() if k not in ("usage", "summary")}
        for command, settings in declared.items()
    }
    assert {command: settings for command, settings in streams.items() if settings} == {
        "export": {"stdout": "binary", "access": "read"},
        "status": {"access": "read"},
        "info": {"access": "read", "secret": ["DSN"]},
        "import": {"stdin": "data"},
        "connect": {"tty": "prefer"},
        "destroy": {"access": "admin"},
        "backup-schedule-cat": {"access": "read"},
        **PLUGIN_ACCESS[name],
    }
    # What a door asks before it grants a pty, by name and by alias.
    root = Root(gokku.root)
    for namespace in {name, "pg" if name == "postgres" else name}:
        assert not command_io([f"{namespace}:export", "db"], root).pty_allowed
        assert command_io([f"{namespace}:connect", "db"], root).tty == "prefer"
        assert command_io(["--quiet", f"{namespace}:import", "db"], root).stdin == "data"
        assert command_io([f"{namespace}:info", "db"], root).pty_allowed


@pytest.mark.skipif(
    not (shutil.which("redis-server") and Path("/usr/lib/postgresql").is_dir()),
    reason="PostgreSQL and Redis servers are not installed",
)
def test_services_start_all_brings_every_server_back(tmp_path: Path) -> None:
    with reachable_root() as gk:
        gk.ok("plugins:add", "postgres")
        gk.ok("plugins:add", "redis")
        gk.ok("services:create", "postgres", "--name", "db")
        gk.ok("services:create", "redis", "--name", "cache")
        # A plugin without start/stop commands (its engine restarts its services) and one
        # whose start fails: neither keeps the others down.
        for name, start in (("inert", None), ("broken", "echo 'no luck' >&2; exit 3\n")):
            plugin = write_plugin(
                tmp_path / name, commands={"commands/start": start} if start else {}
            )
            gk.ok("plugins:add", str(plugin))
            gk.ok("services:create", name, "--name", f"{name}-svc")

        dirs = [gk.root / "services" / name for name in ("db", "cache")]
        pids = [server_pid(d) for d in dirs]
        gk.ok("services:stop", "--all")  # what the unit runs at shutdown
        assert all(pid and wait_gone(pid) for pid in pids)
        assert [server_pid(d) for d in dirs] == [None, None]

        started = gk("services:start", "--all")  # what the unit runs at boot
        assert started.code == 1
        assert "no luck" in started.stderr
        assert "could not start 1 service(s): broken-svc" in started.stderr
        assert "inert-svc: plugin inert has no start command; skipped" in started.stderr
        assert all(server_pid(d) for d in dirs)
        assert gk.ok("pg:connect", "db", "-tAc", "select 1").stdout == "1\n"
        assert gk.ok("redis:connect", "cache", "PING").stdout == "PONG\n"

        assert gk.ok("services:stop", "cache").stderr.endswith("Redis for cache stopped\n")
        assert server_pid(dirs[1]) is None
        gk.ok("services:start", "cache")
        assert server_pid(dirs[1])


def test_services_start_needs_one_service_or_all(gokku) -> None:
    for args in ((), ("db", "--all")):
        result = gokku("services:start", *args)
        assert result.code == 2
        assert "give one service or --all" in result.stderr
    assert gokku("services:start", "nope").code == 1
