"""The rest of the bundled postgres plugin's lifecycle, with real PostgreSQL servers (see
bundled_support): info's single-field flags, pause, expose (beyond loopback only over TLS,
tried with a real psql) and Dokku's questions about services, through both SSH doors for
a key that may only read some of them."""

import glob
import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import (
    host_address,
    reachable_root,
    read_env,
    refused_in_one_line,
    server_pid,
    statuses,
)
from conftest import Gokku
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, make_key

PG_BIN = max(
    glob.glob("/usr/lib/postgresql/*/bin"), default="", key=lambda p: int(p.split("/")[-2])
)
pytestmark = pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries are not installed")


@pytest.fixture(scope="module")
def gk() -> Iterator[Gokku]:
    with reachable_root("postgres") as gokku:
        gokku.ok("apps:create", "api")
        gokku.ok("services:create", "postgres", "--name", "db")
        gokku.ok("pg:link", "db", "api")
        yield gokku


def psql(url: str, sslmode: str, query: str = "select 1") -> subprocess.CompletedProcess:
    return subprocess.run(
        [f"{PG_BIN}/psql", f"{url}?sslmode={sslmode}&connect_timeout=10", "-XAtc", query],
        capture_output=True,
        text=True,
    )


def settings_of(gk: Gokku, service: str) -> dict[str, bytes]:
    """What the commands decide on: the service's record and settings, the server's
    configuration (data files change by themselves)."""
    base = gk.root / "services" / service
    names = ["config.json", "settings.env", "data/pg_hba.conf", "data/postgresql.conf"]
    names += ["data/gokku.conf", "data/gokku-exposed.conf"]
    return {n: (base / n).read_bytes() for n in names if (base / n).exists()}


def test_info_flags_print_just_that_value(gk: Gokku) -> None:
    service_dir = gk.root / "services" / "db"
    expected = {
        "config-dir": str(service_dir / "data"),
        "data-dir": str(service_dir / "data"),
        "dsn": read_env(gk, "api")["DATABASE_URL"],
        "exposed-ports": "-",
        "internal-ip": "127.0.0.1",
        "links": "api",
        "service-root": str(service_dir),
        "status": "running",
    }
    for flag, value in expected.items():
        assert gk.ok("pg:info", "db", f"--{flag}").stdout == value + "\n", flag
    version = gk.ok("pg:info", "db", "--version").stdout
    assert re.fullmatch(PG_BIN.split("/")[-2] + r"\.\d+\n", version)
    for bad in (["--id"], ["--dsn", "--status"]):  # no containers; one flag at a time
        result = gk("pg:info", "db", *bad)
        assert refused_in_one_line(result) and result.code == 2, bad
    assert "valid flags: --config-dir --data-dir --dsn" in gk("pg:info", "db", "--id").stderr


def test_pause_stops_the_server_keeps_its_links_and_says_paused(gk: Gokku) -> None:
    pid = server_pid(gk.root / "services" / "db")
    refused = gk("pg:unpause", "db")
    assert refused_in_one_line(refused) and "is not paused" in refused.stderr
    gk.ok("pg:pause", "db")
    assert server_pid(gk.root / "services" / "db") is None and not os.path.exists(f"/proc/{pid}")
    assert statuses(gk)["db"] == "paused"
    assert gk.ok("pg:info", "db", "--status").stdout == "paused\n"
    assert "DATABASE_URL" in read_env(gk, "api")  # still linked
    gk.ok("pg:unpause", "db")
    assert statuses(gk)["db"] == "running"
    assert psql(read_env(gk, "api")["DATABASE_URL"], "disable", "select 6 * 7").stdout == "42\n"
    # Stopped is not paused: only start brings it back.
    gk.ok("pg:stop", "db")
    assert statuses(gk)["db"] == "stopped"
    assert refused_in_one_line(gk("pg:unpause", "db"))
    gk.ok("pg:start", "db")


def test_expose_lets_other_hosts_in_over_tls_only(gk: Gokku) -> None:
    env = read_env(gk, "api")
    local = env["DATABASE_URL"]
    remote = local.replace("@127.0.0.1:", f"@{host_address()}:")
    assert "Connection refused" in psql(remote, "require").stderr  # loopback only

    before, pid = settings_of(gk, "db"), server_pid(gk.root / "services" / "db")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        for bad in (["db", "0"], ["db", "65536"], ["db", "5x"], ["db", str(taken)], ["nosuch"], []):
            result = gk("pg:expose", *bad)
            assert refused_in_one_line(result), (bad, result)
        assert f"port {taken} is in use" in gk("pg:expose", "db", str(taken)).stderr
    # Its apps use its port: it may not move while they are linked.
    moving = gk("pg:expose", "db", str(taken))
    assert refused_in_one_line(moving) and "linked" in moving.stderr
    assert refused_in_one_line(gk("pg:unexpose", "db"))  # not exposed
    assert settings_of(gk, "db") == before and server_pid(gk.root / "services" / "db") == pid

    exposed = gk.ok("pg:expose", "db")
    assert "Certificate SHA-256 fingerprint: " in exposed.stderr
    key = gk.root / "services" / "db" / "tls" / "server.key"
    assert key.stat().st_mode & 0o777 == 0o600
    assert (
        psql(remote, "require", "select ssl from pg_stat_ssl where pid = pg_backend_pid()").stdout
        == "t\n"
    )
    plain = psql(remote, "disable")
    assert plain.returncode != 0 and "no encryption" in plain.stderr
    assert psql(local, "disable").stdout == "1\n"  # apps on this host connect as before
    assert gk.ok("pg:info", "db", "--exposed-ports").stdout == env["POSTGRES_PORT"] + "\n"
    assert refused_in_one_line(gk("pg:expose", "db"))  # already

    gk.ok("pg:unexpose", "db")
    assert "Connection refused" in psql(remote, "require").stderr
    assert psql(local, "disable").stdout == "1\n"
    assert gk.ok("pg:info", "db", "--exposed-ports").stdout == "-\n"


def test_expose_on_another_port_moves_a_service_no_app_uses(gk: Gokku) -> None:
    gk.ok("services:create", "postgres", "--name", "solo")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    gk.ok("pg:expose", "solo", str(port))
    dsn = gk.ok("pg:info", "solo", "--dsn").stdout.strip()
    assert dsn.endswith(f":{port}/solo")
    assert gk.ok("services:config-get", "solo", "port").stdout.strip() == str(port)
    remote = dsn.replace("@127.0.0.1:", f"@{host_address()}:")
    assert psql(remote, "require", "select current_database()").stdout == "solo\n"
    gk.ok("pg:destroy", "solo", "--force")


class TestThroughDoors:
    """Who sees what: a key that may read service db and app api only."""

    @pytest.fixture
    def reachable(self) -> Iterator[Gokku]:
        with reachable_root() as gokku:
            yield gokku

    # The door fixtures build on these two: a root the servers' users can reach.
    @pytest.fixture
    def gokku(self, reachable: Gokku) -> Gokku:
        return reachable

    @pytest.fixture
    def base_env(self, reachable: Gokku) -> dict[str, str]:
        return reachable.env

    def test_a_member_learns_only_what_it_may_read(
        self, door: Door, gokku: Gokku, keydir: Path
    ) -> None:
        gokku.ok("plugins:add", "postgres")
        for app in ("api", "secretapp"):
            gokku.ok("apps:create", app)
        for service in ("db", "secretdb"):
            gokku.ok("services:create", "postgres", "--name", service)
        gokku.ok("pg:link", "db", "api")
        gokku.ok("pg:link", "db", "secretapp")
        gokku.ok("pg:link", "secretdb", "api", "--alias", "SECRET")
        bob = make_key(keydir, "bob")
        gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
        gokku.ok("access:grant", "bob", "service:db", "--read")
        gokku.ok("access:grant", "bob", "app:api", "--read")

        def answer(command: str, key: Path | None = bob.path) -> tuple[int, str]:
            result = door.ssh(command, key=key)
            return result.code, result.stdout

        # alice, an admin, sees every link; bob only those between names he may read.
        assert answer("pg:links db", None) == (0, "api\nsecretapp\n")
        assert answer("pg:app-links api", None) == (0, "db\nsecretdb\n")
        assert answer("pg:info db --links", None) == (0, "api secretapp\n")
        assert answer("pg:links db") == (0, "api\n")
        assert answer("pg:app-links api") == (0, "db\n")
        assert answer("pg:info db --links") == (0, "api\n")
        assert answer("pg:exists db") == (0, "")
        assert answer("pg:linked db api") == (0, "")
        assert answer("pg:exists nosuchdb", None)[0] == 1
        assert answer("pg:linked secretdb secretapp", None)[0] == 1
        password = gokku.ok("services:config-get", "db", "password").stdout.strip()
        code, dsn = answer("pg:info db --dsn")
        assert code == 0 and password not in dsn and ":<redacted>@127.0.0.1:" in dsn
        for command in ("pg:pause db", "pg:expose db"):  # bob may only read it
            result = door.ssh(command, key=bob.path)
            assert result.code == 1 and "bob may not write service 'db'" in result.stderr

        for template in (
            "pg:exists {s}",
            "pg:links {s}",
            "pg:linked {s} api",
            "pg:linked db {a}",
            "pg:app-links {a}",
            "pg:info {s} --status",
            "pg:expose {s}",
        ):
            seen = []
            for app, service in (("secretapp", "secretdb"), ("nosuchapp", "nosuchdb")):
                result = door.ssh(template.format(a=app, s=service), key=bob.path)
                hide = (result.stdout + result.stderr).replace(app, "NAME").replace(service, "NAME")
                seen.append((result.code, hide))
            assert seen[0] == seen[1], template
            assert seen[0][0] == 1, template
