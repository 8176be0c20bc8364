"""The rest of the bundled redis plugin's lifecycle, with real redis-server processes (see
bundled_support): info's single-field flags, pause, and expose: beyond loopback only over
TLS, tried with a real redis-cli. Dokku's questions (exists, links, linked, app-links) are
Gokku's own answers, the same for every plugin: test_lifecycle_postgres tries them."""

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator

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

pytestmark = pytest.mark.skipif(
    not shutil.which("redis-server"), reason="redis-server is not installed"
)


@pytest.fixture(scope="module")
def gk() -> Iterator[Gokku]:
    with reachable_root("redis") as gokku:
        gokku.ok("apps:create", "api")
        gokku.ok("services:create", "redis", "--name", "cache")
        gokku.ok("redis:link", "cache", "api")
        yield gokku


def ping(gk: Gokku, service: str, host: str, *tls: str) -> str:
    """PING from a redis-cli that is not Gokku's, with the service's password."""
    env = {
        **os.environ,
        "REDISCLI_AUTH": gk.ok("services:config-get", service, "password").stdout.strip(),
    }
    port = gk.ok("services:config-get", service, "port").stdout.strip()
    argv = ["redis-cli", "-h", host, "-p", port, *tls, "ping"]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30).stdout


def settings_of(gk: Gokku, service: str) -> dict[str, bytes]:
    base = gk.root / "services" / service
    return {n: (base / n).read_bytes() for n in ("config.json", "settings.env", "redis.conf")}


def test_info_flags_print_just_that_value(gk: Gokku) -> None:
    service_dir = gk.root / "services" / "cache"
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    expected = {
        "config-dir": str(service_dir),
        "data-dir": str(service_dir / "data"),
        "dsn": read_env(gk, "api")["REDIS_URL"],
        "exposed-ports": "-",
        "internal-ip": "127.0.0.1",
        "links": "api",
        "service-root": str(service_dir),
        "status": "running",
        "version": version.split(" v=")[1].split()[0],
    }
    for flag, value in expected.items():
        assert gk.ok("redis:info", "cache", f"--{flag}").stdout == value + "\n", flag
    result = gk("redis:info", "cache", "--post-start-network")  # no containers, no networks
    assert refused_in_one_line(result) and result.code == 2


def test_pause_stops_the_server_keeps_its_links_and_says_paused(gk: Gokku) -> None:
    assert refused_in_one_line(gk("redis:unpause", "cache"))  # it runs
    gk.ok("redis:pause", "cache")
    assert server_pid(gk.root / "services" / "cache") is None
    assert statuses(gk)["cache"] == "paused"
    assert gk.ok("redis:info", "cache", "--status").stdout == "paused\n"
    assert "REDIS_URL" in read_env(gk, "api")
    gk.ok("redis:unpause", "cache")
    assert statuses(gk)["cache"] == "running"
    assert ping(gk, "cache", "127.0.0.1") == "PONG\n"


def test_expose_speaks_tls_only_and_beyond_loopback(gk: Gokku) -> None:
    host = host_address()
    # Its app's REDIS_URL says redis://: a linked service keeps its plain loopback port.
    before, pid = settings_of(gk, "cache"), server_pid(gk.root / "services" / "cache")
    linked = gk("redis:expose", "cache")
    assert refused_in_one_line(linked) and "linked" in linked.stderr
    assert settings_of(gk, "cache") == before
    assert server_pid(gk.root / "services" / "cache") == pid

    gk.ok("services:create", "redis", "--name", "edge")
    before, pid = settings_of(gk, "edge"), server_pid(gk.root / "services" / "edge")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = str(busy.getsockname()[1])
        for bad in (
            ["edge", "0"],
            ["edge", "65536"],
            ["edge", "x1"],
            ["edge", taken],
            ["nosuch"],
            [],
        ):
            assert refused_in_one_line(gk("redis:expose", *bad)), bad
        assert f"port {taken} is in use" in gk("redis:expose", "edge", taken).stderr
    assert refused_in_one_line(gk("redis:unexpose", "edge"))  # not exposed
    assert settings_of(gk, "edge") == before
    assert server_pid(gk.root / "services" / "edge") == pid
    assert ping(gk, "edge", host) == ""  # loopback only: refused

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = str(probe.getsockname()[1])
    exposed = gk.ok("redis:expose", "edge", port)
    assert "Certificate SHA-256 fingerprint: " in exposed.stderr
    tls_dir = gk.root / "services" / "edge" / "tls"
    assert (tls_dir / "server.key").stat().st_mode & 0o777 == 0o600
    assert gk.ok("redis:info", "edge", "--exposed-ports").stdout == port + "\n"
    assert gk.ok("redis:info", "edge", "--dsn").stdout.startswith("rediss://:")
    tls = ("--tls", "--cacert", str(tls_dir / "server.crt"))
    assert ping(gk, "edge", host, *tls) == "PONG\n"
    assert ping(gk, "edge", host) == ""  # no TLS: no answer
    assert ping(gk, "edge", "127.0.0.1") == ""  # TLS for every client
    assert refused_in_one_line(gk("redis:expose", "edge"))  # already

    gk.ok("redis:unexpose", "edge")
    assert ping(gk, "edge", "127.0.0.1") == "PONG\n"
    assert ping(gk, "edge", host, *tls) == ""
    assert gk.ok("redis:info", "edge", "--dsn").stdout.startswith("redis://:")
    gk.ok("redis:destroy", "edge", "--force")
