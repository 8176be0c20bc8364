"""Plugins written the way Gokku's official ones are (gokku-redis, gokku-postgres) run
unchanged: ``source /opt/gokku/scripts/plugin-helpers.sh``, ``SERVICE_DIR=$(create_service_dir
"$1")``, ``get_service_config | grep -o '"password":"[^"]*"'``, ``bin/install``, 0644
commands, ``lib/`` files, ``hooks/``, and a hard-coded ``/opt/gokku``.

Under the default root the tests run the CLI inside a private mount namespace whose
``/opt`` is an empty tmpfs (the CLI enters it with nsenter), so the machine's own
``/opt/gokku`` is never touched. No Docker engine runs here: containers are the stand-in's
(tests/standins/docker)."""

import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin

OFFICIAL_STYLE = {
    "bin/install": """\
#!/bin/bash
source /opt/gokku/scripts/plugin-helpers.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

SERVICE_NAME="$1"
VERSION="${2:-7}"
SERVICE_DIR=$(create_service_dir "$SERVICE_NAME")
PORT=$(get_next_port)
PASSWORD=$(generate_password)

write_config "$SERVICE_DIR" "$PASSWORD"
docker run -d --name "redis-$SERVICE_NAME" --restart unless-stopped \\
  -p "$PORT:6379" -v "$SERVICE_DIR/data:/data" \\
  -e REDIS_PASSWORD="$PASSWORD" "redis:$VERSION" >/dev/null

update_service_config "$SERVICE_NAME" password "$PASSWORD"
update_service_config "$SERVICE_NAME" port "$PORT"
update_service_config "$SERVICE_NAME" version "$VERSION"
log_info "Redis $SERVICE_NAME created on port $PORT"
""",
    "bin/uninstall": """\
#!/bin/bash
source /opt/gokku/scripts/plugin-helpers.sh
docker rm -f "redis-$1" >/dev/null 2>&1
rm -rf "/opt/gokku/services/$1"
log_info "Redis $1 removed"
""",
    "lib/common.sh": """\
write_config() {
  mkdir -p "$1/data"
  printf 'requirepass %s\\n' "$2" > "$1/redis.conf"
}
""",
    "commands/name": "echo redis\n",
    "commands/help": "#!/bin/bash\necho 'redis:info NAME, redis:cli NAME, redis:backup NAME'\n",
    "commands/info": """\
#!/bin/bash
source /opt/gokku/scripts/plugin-helpers.sh
CONFIG=$(get_service_config "$1")
PORT=$(echo "$CONFIG" | grep -o '"port":"[^"]*"' | cut -d'"' -f4)
PASSWORD=$(echo "$CONFIG" | grep -o '"password":"[^"]*"' | cut -d'"' -f4)
echo "Redis: $1"
echo "Status: $(get_container_status "redis-$1")"
echo "Uptime: $(get_container_uptime "redis-$1")"
echo "URL: redis://:$PASSWORD@localhost:$PORT"
""",
    "commands/logs": '#!/bin/bash\ndocker logs "redis-$1"\n',
    "commands/cli": """\
#!/bin/bash
docker exec -i "redis-$1" sh -c 'echo "PING as $REDIS_PASSWORD"'
""",
    "commands/backup": '#!/bin/bash\nexport_service_data "$1" "$2"\n',
    "commands/restore": '#!/bin/bash\nimport_service_data "$1" "$2"\n',
    "hooks/post-link": """\
#!/bin/bash
echo "linked $1 to $2 ($3)" > "$(create_service_dir "$1")/linked"
""",
}


def add_plugin(gokku: Gokku, tmp_path: Path, name: str, **scripts: str) -> None:
    """Install a small plugin called ``name`` (write_plugin's scripts)."""
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "src" / name, **scripts)))


def official_style_plugin(folder: Path) -> Path:
    for rel, body in OFFICIAL_STYLE.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        path.chmod(0o644)  # as checked out: several official command files have no run bit
    return folder


@pytest.fixture
def private_opt(base_env: dict[str, str], tmp_path: Path) -> Iterator[list[str]]:
    """A mount namespace whose /opt is an empty tmpfs; yields the nsenter prefix."""
    if os.geteuid() != 0 or not shutil.which("nsenter"):
        pytest.skip("a private /opt needs root, unshare and nsenter")
    holder = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-c",
         "mount -t tmpfs gokku-test /opt && echo ready && exec sleep 600"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"ready\n"
        # --wd=.: the directory is opened before entering, so the caller's stays its cwd.
        yield ["nsenter", "-t", str(holder.pid), "-m", "--wd=.", "--"]
    finally:
        holder.kill()
        holder.wait()


@pytest.fixture
def default_root(private_opt: list[str], base_env: dict[str, str]) -> Gokku:
    """The CLI with no GOKKU_ROOT, as root: its state is /opt/gokku (the private one).
    The environment is the fixtures' own dict, so that later ones (the docker stand-in's
    PATH) reach it too."""
    base_env.pop("GOKKU_ROOT")
    return Gokku(Path("/opt/gokku"), base_env, prefix=private_opt)


def inside(prefix: list[str], *command: str) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *command], capture_output=True, text=True)


def test_official_style_plugin_lifecycle_under_the_default_root(
    default_root: Gokku, private_opt: list[str], docker_standin: Path, tmp_path: Path
) -> None:
    gk = default_root
    tree = official_style_plugin(tmp_path / "gokku-redis")
    assert "Plugin redis installed" in gk.ok("plugins:add", str(tree)).stderr
    created = gk.ok("services:create", "redis", "--name", "cache")
    port = re.search(r"\[INFO\] Redis cache created on port (\d+)", created.stdout)[1]

    config = inside(private_opt, "cat", "/opt/gokku/services/cache/redis.conf").stdout
    password = config.split()[1]
    assert config == f"requirepass {password}\n" and len(password) == 25
    assert not Path("/redis.conf").exists() and not Path("/data").exists()
    assert (docker_standin / "redis-cache" / "restart").read_text() == "unless-stopped\n"
    mounts = (docker_standin / "redis-cache" / "volumes").read_text()
    assert mounts == "/opt/gokku/services/cache/data:/data\n"

    info = gk.ok("redis:info", "cache").stdout
    assert info == (
        f"Redis: cache\nStatus: running\nUptime: 1d 2h 3m\n"
        f"URL: redis://:{password}@localhost:{port}\n"
    )
    assert gk.ok("services:info", "cache").stdout == info
    assert gk.ok("services:logs", "cache").stdout == "log line from redis-cache\n"
    assert gk.ok("redis:cli", "cache").stdout == f"PING as {password}\n"

    gk.ok("apps:create", "api")
    gk.ok("services:link", "cache", "-a", "api")
    assert gk.ok("config:get", "-a", "api", "REDIS_URL").stdout == (
        f"redis://:{password}@localhost:{port}\n"
    )
    linked = inside(private_opt, "cat", "/opt/gokku/services/cache/linked").stdout
    assert linked == "linked cache to api (shared)\n"

    # A backup to a path relative to where the user stands, in the original's layout.
    work = tmp_path / "work"
    work.mkdir()
    saved = gk.ok("redis:backup", "cache", "cache.tgz", cwd=work)
    assert saved.stdout == "Service data exported to: cache.tgz\n"
    with tarfile.open(work / "cache.tgz") as tar:
        names = tar.getnames()
    assert "./redis.conf" in names and all(n == "." or n.startswith("./") for n in names)

    gk.ok("services:unlink", "cache", "-a", "api")
    gk.ok("services:destroy", "cache", "--force")
    assert not (docker_standin / "redis-cache").exists()
    assert inside(private_opt, "test", "-e", "/opt/gokku/services/cache").returncode == 1
    assert gk.ok("services:list").stdout == "No services\n"


def test_a_hard_coded_root_is_refused_elsewhere_unless_forced(
    gokku: Gokku, private_opt: list[str], docker_standin: Path, tmp_path: Path
) -> None:
    """Its uninstall would rm -rf /opt/gokku/services/NAME: another install's data."""
    tree = official_style_plugin(tmp_path / "gokku-redis")
    report = gokku.ok("plugins:validate", str(tree)).stdout
    assert "bin/install, bin/uninstall, commands/info hard-code /opt/gokku" in report
    before = gokku.snapshot()
    refused = gokku("plugins:add", str(tree))
    assert refused.code == 1 and refused.stderr.count(" !     ") == 1
    assert f"this GOKKU_ROOT is {gokku.root}" in refused.stderr and "--force" in refused.stderr
    assert gokku.snapshot() == before
    # Forced, it runs (in the private namespace: its uninstall aims at /opt/gokku).
    forced = Gokku(gokku.root, gokku.env, prefix=private_opt)
    forced.ok("plugins:add", str(tree), "--force")
    forced.ok("services:create", "redis", "--name", "cache")
    assert (gokku.root / "services" / "cache" / "redis.conf").is_file()
    assert "Status: running" in forced.ok("redis:info", "cache").stdout


def test_backups_move_both_ways_and_hostile_archives_are_refused(
    gokku: Gokku, tmp_path: Path
) -> None:
    backup = {
        "commands/backup": 'export_service_data "$1" "$2"\n',
        "commands/restore": 'import_service_data "$1" "$2"\n',
    }
    add_plugin(gokku, tmp_path, "b", commands=backup)
    gokku.ok("services:create", "b", "--name", "s1")
    # As the original makes it: tar -czf PATH -C services/SVC .
    made = tmp_path / "made"
    (made / "data").mkdir(parents=True)
    (made / "data" / "dump.rdb").write_bytes(b"REDIS\x00\xff")
    original = tmp_path / "original.tgz"
    subprocess.run(["tar", "-czf", str(original), "-C", str(made), "."], check=True)
    restored = gokku.ok("b:restore", "s1", str(original))
    assert restored.stdout == f"Service data imported from: {original}\n"
    assert (gokku.root / "services/s1/data/dump.rdb").read_bytes() == b"REDIS\x00\xff"

    def hostile(name: str, member: tarfile.TarInfo, data: bytes = b"x") -> Path:
        import io

        path = tmp_path / name
        with tarfile.open(path, "w:gz") as tar:
            member.size = len(data) if member.isfile() else 0
            tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
        return path

    link = tarfile.TarInfo("./escape")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    device = tarfile.TarInfo("./null")
    device.type = tarfile.CHRTYPE
    before = gokku.snapshot()
    for archive, said in [
        (hostile("up.tgz", tarfile.TarInfo("./../../escaped")), "outside service s1"),
        (hostile("abs.tgz", tarfile.TarInfo("/tmp/escaped")), "outside service s1"),
        (hostile("other.tgz", tarfile.TarInfo("other-service/config.json")), "outside"),
        (hostile("link.tgz", link), "links or device files"),
        (hostile("dev.tgz", device), "links or device files"),
    ]:
        result = gokku("b:restore", "s1", str(archive))
        assert result.code == 1 and said in result.stderr, result.stderr
        assert result.out == b""
    assert gokku.snapshot() == before
    assert not (tmp_path / "escaped").exists() and not Path("/tmp/escaped").exists()


def test_helpers_print_what_the_original_prints(
    gokku: Gokku, docker_standin: Path, tmp_path: Path
) -> None:
    exports = 'env | grep -E "^GOKKU_(DIR|SCRIPTS_DIR|BIN_DIR|OS|ARCH)=" | sort\n'
    add_plugin(gokku, tmp_path, "h", commands={"commands/call": '"$@"\n', "commands/env": exports})

    def call(*args: str):
        return gokku("h:call", *args)

    missing = call("get_service_config", "nope")
    assert (missing.code, missing.stdout) == (0, "{}\n")
    gokku.ok("services:create", "h", "--name", "s1")
    assert call("update_service_config", "s1", "password", "p w").code == 0
    line = call("get_service_config", "s1").stdout
    assert line.count("\n") == 1 and '"password":"p w"' in line
    assert json.loads(line)["config"] == {"password": "p w"}
    for function in ("get_container_status", "get_container_started", "get_container_uptime"):
        result = call(function, "no-such-container")
        assert (result.code, result.stdout) == (0, "unknown\n"), function
    subprocess.run(["docker", "run", "-d", "--name", "c1", "img"], env=gokku.env, check=True,
                   capture_output=True)  # fmt: skip
    started = docker_standin / "c1" / "started"
    for ago, shown in [
        ("-5 minutes -10 seconds", "5m"),
        ("-2 hours -5 minutes", "2h 5m"),
        ("-1 day -2 hours -5 minutes", "1d 2h 5m"),
        ("+1 hour", "unknown"),
    ]:
        stamp = subprocess.run(["date", "-u", "-d", ago, "+%Y-%m-%dT%H:%M:%S.0Z"],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        started.write_text(stamp)
        assert call("get_container_uptime", "c1").stdout == f"{shown}\n", ago
    for i in range(7):
        subprocess.run(["docker", "run", "-d", "--name", f"web-{i}", "img"], env=gokku.env,
                       check=True, capture_output=True)  # fmt: skip
    assert call("cleanup_old_containers", "^web-").code == 0
    assert len([p for p in docker_standin.iterdir() if p.name.startswith("web-")]) == 5
    exported = dict(line.split("=", 1) for line in gokku.ok("h:env").stdout.splitlines())
    assert exported == {
        "GOKKU_ARCH": os.uname().machine.lower(),
        "GOKKU_BIN_DIR": "/usr/local/bin",
        "GOKKU_DIR": str(gokku.root),
        "GOKKU_OS": "linux",
        "GOKKU_SCRIPTS_DIR": str(gokku.root / "scripts"),
    }
    # set_app_env refuses an app that does not exist (no directory made behind apps:create).
    refused = call("set_app_env", "ghost", "shared", "K", "v")
    assert refused.code == 1 and "app 'ghost' does not exist" in refused.stderr
    assert not (gokku.root / "apps" / "ghost").exists()


def test_misused_helpers_write_nothing_outside_the_root(gokku: Gokku, tmp_path: Path) -> None:
    add_plugin(gokku, tmp_path, "m", commands={"commands/call": '"$@"\n'})
    # The filesystem's root and the test's own directory (the root's parent): /tmp as a
    # whole belongs to whatever else runs on the machine.
    around = {p: sorted(os.listdir(p)) for p in (Path("/"), tmp_path)}
    for args in (
        ("create_service_dir", ""),
        ("create_service_dir", "../../escape"),
        ("create_service_dir", "/abs"),
        ("create_service_dir", "x\n"),
        ("export_service_data", "", str(tmp_path / "x.tgz")),
        ("export_service_data", "../..", str(tmp_path / "y.tgz")),
        ("import_service_data", "../../escape", str(tmp_path / "none.tgz")),
        ("update_service_config", "../x", "k", "v"),
        ("set_app_env", "../x", "shared", "K", "v"),
        ("set_app_env", "x", "../shared", "K", "v"),
    ):
        result = gokku("m:call", *args)
        assert result.code != 0 and result.out == b"", args
    assert {p: sorted(os.listdir(p)) for p in around} == around
    assert not (gokku.root / "services").exists() or list((gokku.root / "services").iterdir()) == []


def test_services_list_shows_the_version_the_plugin_recorded(gokku: Gokku, tmp_path) -> None:
    add_plugin(gokku, tmp_path, "v", install='update_service_config "$1" version "7.2"\n')
    gokku.ok("services:create", "v", "--name", "s1")
    gokku.ok("services:create", "v:6", "--name", "s2")
    listed = {s["name"]: s["version"] for s in json.loads(
        gokku.ok("services:list", "--format", "json").stdout)}  # fmt: skip
    assert listed == {"s1": "7.2", "s2": "6"}


def test_scripts_start_where_the_caller_is(gokku: Gokku, tmp_path: Path) -> None:
    """On the server's CLI a relative path means the caller's directory, as in the
    original (postgres:restore db backup.sql); over SSH scripts start in GOKKU_ROOT
    (tests/test_ssh_doors.py)."""
    add_plugin(gokku, tmp_path, "r", commands={"commands/read": 'cat "$1"\n'})
    here = tmp_path / "here"
    here.mkdir()
    (here / "backup.sql").write_text("select 1;\n")
    assert gokku.ok("r:read", "backup.sql", cwd=here).stdout == "select 1;\n"
