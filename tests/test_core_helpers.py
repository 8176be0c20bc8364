"""The plugin helpers (scripts/plugin-helpers.sh) as plugins use them, and the spec's
PostgreSQL example plugin end to end, served as a GitHub archive.

No Docker engine runs on test machines: the container helpers talk to the stand-in in
tests/standins/docker (see the ``docker_standin`` fixture)."""

import json
import re
import socket
import subprocess
import sys
import tarfile
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from bundled_support import run_in_pty
from conftest import REPO, write_plugin


@pytest.fixture
def helpers(gokku, tmp_path):
    """``gokku t:call FUNCTION ARGS...`` runs one helper function inside a plugin script."""
    tree = write_plugin(
        tmp_path / "gokku-t",
        commands={
            "commands/call": '"$@"\n',
            "commands/sourced": (
                'source "$GOKKU_ROOT/scripts/plugin-helpers.sh"\n'
                'source "$GOKKU_DIR/scripts/plugin-helpers.sh"\n'
                '"$@"\n'
            ),
        },
        install='update_service_config "$1" port "$(get_next_port 19600)"\n',
    )
    gokku.ok("plugins:add", str(tree))
    (gokku.root / "gokku.yml").unlink()  # these tests name their ports: no service_ports
    return lambda *args, **kw: gokku("t:call", *args, **kw)


def test_get_next_port_honours_start_and_skips_taken_ports(gokku, helpers):
    assert helpers("get_next_port", "19500").stdout == "19500\n"
    gokku.ok("services:create", "t", "--name", "s1")  # takes 19600
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 19601))
        busy.listen()
        assert helpers("get_next_port", "19600").stdout == "19602\n"
        assert helpers("port_available", "19601").code == 1
    assert helpers("port_available", "19601").code == 0  # nothing listens, nothing held
    assert helpers("port_available", "19600").code == 1  # recorded by s1
    assert helpers("port_available", "19602").code == 1  # held: handed out above
    assert helpers("get_next_port", "abc").code == 2
    assert gokku("services:next-port", "--check", "70000").code == 2


def test_service_ports_bound_what_is_handed_out(gokku, helpers):
    """gokku.yml's service_ports: a first port below the range starts at its low end, and
    nothing above it is handed out; a bad range is one line, and hands out nothing."""
    settings = gokku.root / "gokku.yml"
    settings.write_text("service_ports: 19900-19901\n")
    assert helpers("get_next_port", "5433").stdout == "19900\n"
    assert helpers("get_next_port", "19901").stdout == "19901\n"
    full = gokku("services:next-port", "19900")
    assert full.code == 1
    assert full.stderr.strip().endswith(
        "no free port from 19900 to 19901 (gokku.yml: service_ports)"
    )
    for bad in ("19901-19900", "abc", "0-10", "19900"):
        settings.write_text(f"service_ports: '{bad}'\n")
        refused = gokku("services:next-port", "19900")
        assert refused.code == 1
        assert (
            f"service_ports must be LOW-HIGH, ports from 1 to 65535 (as 20000-20999), not '{bad}'"
            in (refused.stderr)
        )
        assert refused.stderr.count("\n") == 1


def test_get_next_port_never_hands_out_a_port_twice(gokku, helpers):
    """Services created at once, or a plugin asking for two ports, get different ones."""
    with ThreadPoolExecutor(6) as pool:
        ports = list(pool.map(lambda _: helpers("get_next_port", "19700").stdout, range(6)))
    assert len(set(ports)) == 6
    assert all(int(port) >= 19700 for port in ports)


def test_a_held_port_is_handed_out_again_after_the_hold(gokku, helpers):
    port = helpers("get_next_port", "19800").stdout.strip()
    held = gokku.root / "services" / ".held-ports.json"
    assert json.loads(held.read_text()).keys() == {port}
    assert helpers("port_available", port).code == 1
    held.write_text(json.dumps({port: time.time() - 1}))  # as if ten minutes had passed
    assert helpers("port_available", port).code == 0
    assert helpers("get_next_port", port).stdout.strip() == port


def test_get_next_port_defaults_to_9000_or_above(helpers):
    assert int(helpers("get_next_port").stdout) >= 9000


def test_generate_password(helpers):
    passwords = {helpers("generate_password").stdout.strip() for _ in range(3)}
    assert len(passwords) == 3
    assert all(re.fullmatch(r"[A-Za-z0-9]{25}", p) for p in passwords)
    assert re.fullmatch(r"[A-Za-z0-9]{64}\n", helpers("generate_password", "64").stdout)


def test_log_functions_write_timestamped_lines_as_the_original(helpers):
    """log_message and log_info on stdout, warnings and errors on stderr."""
    result = helpers("log_message", "INFO", "hello world", "ignored")
    assert result.err == b""
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] \[INFO\] hello world\n", result.stdout)
    assert helpers("log_info", "a", "b").stdout.endswith("] [INFO] a b\n")
    for function, level in (("log_error", "ERROR"), ("log_warning", "WARNING")):
        result = helpers(function, "bad")
        assert result.out == b"" and result.stderr.endswith(f"] [{level}] bad\n")


def test_command_exists(helpers):
    assert helpers("command_exists", "bash").code == 0
    assert helpers("command_exists", "no-such-command-xyz").code == 1


def test_set_app_env_keeps_values_exact(gokku, helpers):
    gokku.ok("apps:create", "api")
    value = """a b "c" 'd' e=f $g"""
    assert helpers("set_app_env", "api", "shared", "MSG", value).code == 0
    assert gokku.ok("config:get", "-a", "api", "MSG").stdout == value + "\n"
    unset = helpers("get_app_base_port", "api")
    assert (unset.code, unset.out) == (0, b"")  # as the original: nothing when PORT is unset
    helpers("set_app_env", "api", "shared", "PORT", "5000")
    assert helpers("get_app_base_port", "api", "shared").stdout == "5000\n"
    assert helpers("unset_app_env", "api", "shared", "MSG").code == 0
    assert json.loads(gokku.ok("config:list", "-a", "api", "--format", "json").stdout) == {
        "PORT": "5000"
    }
    result = helpers("set_app_env", "api", "shared", "ONLY_KEY")
    assert result.code == 2 and "usage: set_app_env APP ENV KEY VALUE" in result.stderr


def test_concurrent_helper_writes_lose_nothing(gokku, helpers):
    gokku.ok("apps:create", "api")
    gokku.ok("services:create", "t", "--name", "s1")
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(
            pool.map(
                lambda i: helpers("set_app_env", "api", "shared", f"K{i}", f"v {i}"), range(20)
            )
        )
        list(
            pool.map(lambda i: helpers("update_service_config", "s1", f"k{i}", f"= {i}"), range(20))
        )
    assert len(json.loads(gokku.ok("config:list", "-a", "api", "--format", "json").stdout)) == 20
    config = json.loads((gokku.root / "services/s1/config.json").read_text())["config"]
    assert all(config[f"k{i}"] == f"= {i}" for i in range(20))


def test_service_config_helpers(gokku, helpers):
    gokku.ok("services:create", "t", "--name", "s1")
    assert helpers("update_service_config", "s1", "user", "it's me").code == 0
    assert helpers("get_service_config", "s1", "user").stdout == "it's me\n"
    whole = json.loads(helpers("get_service_config", "s1").stdout)
    assert whole["config"] == {"port": "19600", "user": "it's me"}
    missing = helpers("get_service_config", "s1", "nope")
    assert missing.code == 1 and "has no config key 'nope'" in missing.stderr
    assert helpers("update_service_config", "ghost", "k", "v").code == 1


def test_create_service_dir_refuses_bad_names(gokku, helpers):
    made = helpers("create_service_dir", "fresh")
    assert made.stdout == f"{gokku.root}/services/fresh\n"  # SERVICE_DIR=$(create_service_dir)
    assert (gokku.root / "services" / "fresh").is_dir()
    result = helpers("create_service_dir", "../../escape")
    assert result.code == 2 and "invalid name" in result.stderr
    assert not (gokku.root.parent / "escape").exists()


def test_export_and_import_service_data(gokku, helpers, tmp_path):
    gokku.ok("services:create", "t", "--name", "s1")
    (gokku.root / "services/s1/data.bin").write_bytes(b"\x00data\xff")
    archive = tmp_path / "s1.tar.gz"
    assert helpers("export_service_data", "s1", str(archive)).code == 0
    (gokku.root / "services/s1/data.bin").unlink()
    assert helpers("import_service_data", "s1", str(archive)).code == 0
    assert (gokku.root / "services/s1/data.bin").read_bytes() == b"\x00data\xff"

    hostile = tmp_path / "hostile.tar.gz"
    with tarfile.open(hostile, "w:gz") as tar:
        tar.add(gokku.root / "services/s1/config.json", arcname="other-service/config.json")
    result = helpers("import_service_data", "s1", str(hostile))
    assert result.code == 1 and "outside service s1" in result.stderr
    assert not (gokku.root / "services/other-service").exists()


def test_helpers_sourced_again_by_path_still_work(helpers, gokku):
    result = gokku("t:sourced", "generate_password", "8")
    assert result.code == 0, result.stderr
    assert re.fullmatch(r"[A-Za-z0-9]{8}\n", result.stdout)


def test_container_helpers_against_docker_standin(gokku, docker_standin, helpers):
    assert helpers("container_exists", "pg1").code == 1
    assert helpers("get_container_port", "pg1", "5432").code == 1
    assert helpers("wait_for_container", "pg1", "1").code == 1
    for name in ("web-1", "web-2", "web-3", "pg1"):
        subprocess.run(
            ["docker", "run", "-d", "--name", name, "-p", "9432:5432", "img"],
            env=gokku.env,
            check=True,
            capture_output=True,
        )
        time.sleep(0.01)  # distinct creation times for `ps` ordering
    assert helpers("container_exists", "pg1").code == 0
    assert helpers("container_is_running", "pg1").code == 0
    assert helpers("wait_for_container", "pg1", "1").code == 0
    assert helpers("get_container_status", "pg1").stdout == "running\n"
    assert helpers("get_container_port", "pg1", "5432").stdout == "9432\n"
    assert helpers("get_container_uptime", "pg1").stdout == "1d 2h 3m\n"
    subprocess.run(["docker", "stop", "pg1"], env=gokku.env, check=True, capture_output=True)
    assert helpers("container_is_running", "pg1").code == 1
    assert helpers("container_exists", "pg1").code == 0
    assert helpers("cleanup_old_containers", "^web-", "1").code == 0
    assert sorted(p.name for p in docker_standin.iterdir()) == ["pg1", "web-3"]


SPEC_INSTALL = """\
#!/bin/bash
SERVICE_NAME="$1"

echo "-----> Installing PostgreSQL service: $SERVICE_NAME"

# Get next available port
PORT=$(get_next_port)
PASSWORD=$(generate_password)

# Create PostgreSQL container
docker run -d \\
  --name "$SERVICE_NAME" \\
  -p "$PORT:5432" \\
  -e POSTGRES_DB="$SERVICE_NAME" \\
  -e POSTGRES_USER="user" \\
  -e POSTGRES_PASSWORD="$PASSWORD" \\
  postgres:15

# Wait for container to be ready
wait_for_container "$SERVICE_NAME"

echo "-----> PostgreSQL service installed on port $PORT"
"""

SPEC_INFO = """\
#!/bin/bash
SERVICE_NAME="$1"

echo "PostgreSQL Service: $SERVICE_NAME"
echo "================================"

if ! container_exists "$SERVICE_NAME"; then
    echo "Status: NOT FOUND"
    exit 0
fi

if ! container_is_running "$SERVICE_NAME"; then
    echo "Status: STOPPED"
    exit 0
fi

STATUS=$(get_container_status "$SERVICE_NAME")
PORT=$(get_container_port "$SERVICE_NAME" 5432)
UPTIME=$(get_container_uptime "$SERVICE_NAME")

echo "Status: $STATUS"
echo "Port: $PORT"
echo "Uptime: $UPTIME"
echo "Database: $SERVICE_NAME"
"""


@pytest.fixture
def spec_postgres(gokku, github, docker_standin, tmp_path):
    tree = tmp_path / "gokku-postgres"
    files = {
        "README.md": "# gokku-postgres\n",
        "install": SPEC_INSTALL,
        "uninstall": '#!/bin/bash\nSERVICE_NAME="$1"\ndocker rm -f "$SERVICE_NAME"\n',
        "commands/name": "#!/bin/bash\necho pg\n",
        "commands/help": "#!/bin/bash\necho 'postgres:info SERVICE'\n",
        "commands/info": SPEC_INFO,
        "commands/logs": '#!/bin/bash\nSERVICE_NAME="$1"\ndocker logs "$SERVICE_NAME"\n',
        "commands/destroy": '#!/bin/bash\ndocker rm -f "$1"\n',
    }
    for rel, body in files.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_text(body)
        (tree / rel).chmod(0o644)  # as downloaded: no run bits; Gokku sets them
    commit = github.publish("thadeu", "gokku-postgres", tree)
    return commit


def test_spec_postgres_example_end_to_end(gokku, spec_postgres, docker_standin):
    added = gokku.ok("plugins:add", "thadeu/gokku-postgres")
    assert "Plugin postgres installed (namespace pg)" in added.stderr
    listed = json.loads(gokku.ok("plugins:list", "--format", "json").stdout)
    assert listed[0]["name"] == "postgres" and listed[0]["commit"] == spec_postgres
    installed = gokku.root / "plugins/postgres"
    assert all((installed / p).stat().st_mode & 0o111 for p in ("install", "commands/info"))

    created = gokku.ok("services:create", "postgres", "--name", "postgres-api")
    port = re.search(r"installed on port (\d+)", created.stdout).group(1)
    assert int(port) >= 9000
    assert (docker_standin / "postgres-api/ports").read_text() == f"{port}:5432\n"

    info = gokku.ok("services:info", "postgres-api").stdout
    assert info == textwrap.dedent(f"""\
        PostgreSQL Service: postgres-api
        ================================
        Status: running
        Port: {port}
        Uptime: 1d 2h 3m
        Database: postgres-api
        """)
    assert gokku.ok("pg:info", "postgres-api").stdout == info
    assert gokku.ok("services:logs", "postgres-api").stdout == "log line from postgres-api\n"

    # The spec's example records neither port nor password: link says exactly what is missing.
    gokku.ok("apps:create", "api-production")
    result = gokku("services:link", "postgres-api", "-a", "api-production")
    assert result.code == 1
    assert "its config lacks user, password, port, database" in result.stderr

    gokku.ok("services:destroy", "postgres-api", "--force")
    assert not (docker_standin / "postgres-api").exists()
    assert gokku.ok("services:list").stdout == "No services\n"
    gone = gokku("services:info", "postgres-api")
    assert gone.code == 1 and "service 'postgres-api' does not exist" in gone.stderr


def test_destroying_a_service_frees_its_port_at_once(gokku, helpers):
    """Its hold would otherwise keep the port from the next service for ten minutes."""
    gokku.ok("services:create", "t", "--name", "s1")  # install: get_next_port 19600
    port = json.loads((gokku.root / "services/s1/config.json").read_text())["config"]["port"]
    assert helpers("port_available", port).code == 1
    gokku.ok("services:destroy", "s1", "--force")
    assert helpers("port_available", port).code == 0
    held = json.loads((gokku.root / "services" / ".held-ports.json").read_text())
    assert port not in held


# 2.5 MiB in three bursts 1.2 s apart: a transfer long enough for two progress lines.
SLOW = """
{ head -c 1048576 /dev/zero; sleep 1.2; head -c 1048576 /dev/zero; sleep 1.2
  head -c 524288 /dev/zero; } | meter slow "${1:-}" | wc -c
"""
SUMMARY = rb"-----> slow: 2\.5 MiB in 2\.\d s \(\d+\.\d [KM]iB/s\)\r?\n"  # \r: a terminal's


@pytest.fixture
def slow(gokku, tmp_path):
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "slow", commands={"commands/run": SLOW})))
    return "slow:run"


def test_meter_reports_every_second_on_a_terminal_with_the_total_when_known(gokku, slow):
    known = run_in_pty(gokku, slow, "2621440", stdin_tty=False, stdout_tty=False, stderr_tty=True)
    assert known.code == 0 and known.out == b"2621440\n"
    updates = re.findall(rb"\r-----> slow: ([^\r\x1b]*)\x1b\[K", known.err)
    assert len(updates) >= 2, known.err
    assert re.fullmatch(rb"1\.0 MiB of 2\.5 MiB \(40%\), \d+\.\d [KM]iB/s, 1\.\d s", updates[0])
    assert re.search(rb"\r\x1b\[K" + SUMMARY + rb"$", known.err), known.err
    unknown = run_in_pty(gokku, slow, stdin_tty=False, stdout_tty=False, stderr_tty=True)
    assert re.search(rb"\r-----> slow: 1\.0 MiB, \d+\.\d [KM]iB/s, 1\.\d s\x1b\[K", unknown.err)
    quiet = run_in_pty(gokku, "--quiet", slow, stdin_tty=False, stdout_tty=False, stderr_tty=True)
    assert (quiet.code, quiet.out, quiet.err) == (0, b"2621440\n", b"")


def test_meter_without_a_terminal_says_only_how_it_went(gokku, slow):
    result = gokku.ok(slow, "2621440")
    assert result.out == b"2621440\n"
    assert re.fullmatch(SUMMARY, result.err), result.err


def test_input_size_is_the_size_of_a_file_on_stdin_and_nothing_for_a_pipe(gokku, helpers, tmp_path):
    data = tmp_path / "data"
    data.write_bytes(b"x" * 5000)
    with open(data, "rb") as stdin:
        as_file = subprocess.run(
            [sys.executable, "-m", "gokku", "t:call", "input_size"],
            stdin=stdin, capture_output=True, env=gokku.env, cwd=REPO, check=True,
        )  # fmt: skip
    assert as_file.stdout == b"5000\n"
    assert helpers("input_size", input=b"x" * 5000).stdout == ""


def test_server_pid_of_a_gone_process_says_nothing(helpers, tmp_path):
    """A pid file left by a server that is gone (after a reboot, say) is no error to print."""
    pidfile = tmp_path / "server.pid"
    pidfile.write_text("4194304\n")  # above the largest pid_max Linux allows: never alive
    result = helpers("server_pid", str(pidfile), "postgres")
    assert (result.code, result.out, result.err) == (1, b"", b"")
