"""The bundled redis plugin, with real redis-server processes (see bundled_support)."""

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import (
    human_bytes,
    listening,
    next_available_port,
    rdb_without_aux,
    reachable_root,
    read_env,
    run_in_pty,
    server_pid,
    statuses,
    wait_gone,
)
from conftest import Gokku

pytestmark = pytest.mark.skipif(
    not shutil.which("redis-server"), reason="redis-server is not installed"
)

# 1400 values of 6 KiB random bytes in base64 (which LZF cannot shrink): about 11 MB.
BIG_KEYS = 1400


@pytest.fixture(scope="module")
def gk() -> Iterator[Gokku]:
    with reachable_root("redis") as gokku:
        yield gokku


@pytest.fixture(scope="module")
def cache(gk: Gokku) -> str:
    """A running service with a few keys, shared by the tests that do not change it."""
    gk.ok("services:create", "redis", "--name", "cache")
    gk.ok("redis:connect", "cache", input=b"SET greeting hello\nRPUSH list a b c\n")
    return "cache"


def port_of(gk: Gokku, service: str) -> int:
    return int(gk.ok("services:config-get", service, "port").stdout)


def cli(gk: Gokku, service: str, *command: str) -> str:
    return gk.ok("redis:connect", service, *command).stdout.strip()


def redis_cli_directly(env: dict[str, str], *args: str, input: bytes = b"") -> bytes:
    """redis-cli run by hand with the variables a linked app gets."""
    return subprocess.run(
        ["redis-cli", "-h", env["REDIS_HOST"], "-p", env["REDIS_PORT"], *args],
        env={"PATH": os.environ["PATH"], "REDISCLI_AUTH": env["REDIS_PASSWORD"]},
        input=input,
        capture_output=True,
        check=True,
    ).stdout


def rdb_is_sound(data: bytes, tmp_path: Path) -> bool:
    """redis-check-rdb's verdict, checksum included."""
    path = tmp_path / f"{hashlib.sha256(data).hexdigest()}.rdb"
    path.write_bytes(data)
    check = subprocess.run(["redis-check-rdb", str(path)], capture_output=True, text=True)
    return check.returncode == 0 and "Checksum OK" in check.stdout


def test_round_trip_create_link_write_export_destroy_create_import(
    gk: Gokku, tmp_path: Path
) -> None:
    gk.ok("services:create", "redis", "--name", "trip")
    gk.ok("apps:create", "api")
    gk.ok("services:link", "trip", "-a", "api")
    env = read_env(gk, "api")
    assert env["REDIS_URL"] == (
        f"redis://:{env['REDIS_PASSWORD']}@{env['REDIS_HOST']}:{env['REDIS_PORT']}"
    )
    # The variables really connect, with a client that is not Gokku's; without the
    # password the server refuses.
    assert redis_cli_directly(env, "PING") == b"PONG\n"
    anonymous = subprocess.run(
        ["redis-cli", "-p", env["REDIS_PORT"], "GET", "x"], capture_output=True, text=True
    )
    assert "NOAUTH" in anonymous.stdout + anonymous.stderr

    values = [base64.b64encode(os.urandom(6 * 1024)).decode() for _ in range(BIG_KEYS)]
    writes = "".join(f"SET key:{i} {value}\n" for i, value in enumerate(values))
    gk.ok("redis:connect", "trip", input=writes.encode() + b'SET "with space" "a b"\n')
    reads = "".join(f"GET key:{i}\n" for i in range(BIG_KEYS)).encode()

    exported = gk.ok("redis:export", "trip")
    rdb = exported.out
    assert len(rdb) >= 10 * 1024 * 1024
    assert f"-----> trip: {human_bytes(len(rdb))} in " in exported.stderr
    assert rdb_is_sound(rdb, tmp_path)
    # The same data as redis-cli --rdb run by hand; only the AUX fields (creation time,
    # memory, replication offset) and the checksum over them differ between snapshots.
    direct = tmp_path / "direct.rdb"
    redis_cli_directly(env, "--rdb", str(direct))
    assert rdb_is_sound(direct.read_bytes(), tmp_path)
    assert (
        hashlib.sha256(rdb_without_aux(rdb)).hexdigest()
        == hashlib.sha256(rdb_without_aux(direct.read_bytes())).hexdigest()
    )

    service_dir = gk.root / "services" / "trip"
    pid, port = server_pid(service_dir), int(env["REDIS_PORT"])
    assert pid and listening(port)
    gk.ok("redis:destroy", "trip", "--force")
    assert wait_gone(pid), "the server outlived its service"
    assert not listening(port)
    assert not service_dir.exists()

    gk.ok("services:create", "redis", "--name", "trip")
    gk.ok("redis:import", "trip", input=rdb)
    assert cli(gk, "trip", "DBSIZE") == str(BIG_KEYS + 1)
    assert gk.ok("redis:connect", "trip", input=reads).stdout.split("\n")[:-1] == values
    assert cli(gk, "trip", "GET", "with space") == "a b"
    gk.ok("redis:destroy", "trip", "--force")


def test_export_is_byte_exact_when_stdout_is_a_terminal(gk: Gokku, cache: str) -> None:
    through_pipe = gk.ok("redis:export", cache).out
    through_tty = run_in_pty(gk, "redis:export", cache, stdin_tty=True, stdout_tty=True)
    assert through_tty.code == 0, through_tty.stderr
    assert rdb_without_aux(through_tty.out) == rdb_without_aux(through_pipe)
    assert len(through_tty.out) == len(through_pipe)


def test_import_with_a_terminal_on_stdin_is_refused(gk: Gokku, cache: str) -> None:
    result = run_in_pty(gk, "redis:import", cache, stdin_tty=True, stdout_tty=False)
    assert result.code == 2
    assert b"pipe it in" in result.err
    assert cli(gk, cache, "GET", "greeting") == "hello"


def test_connect_with_a_terminal_is_interactive(gk: Gokku, cache: str) -> None:
    prompt = f"127[.]0[.]0[.]1:{port_of(gk, cache)}> ".encode()
    dialogue = ((prompt, b"GET greeting\r"), (b'"hello".*' + prompt, b"quit\r"))
    result = run_in_pty(
        gk, "redis:connect", cache, stdin_tty=True, stdout_tty=True, dialogue=dialogue
    )
    assert result.code == 0, result.err
    assert b'"hello"' in result.out  # quoted, as redis-cli does for a terminal


def test_connect_without_a_terminal_runs_the_commands_on_stdin(gk: Gokku, cache: str) -> None:
    result = gk.ok("redis:connect", cache, input=b"GET greeting\nLRANGE list 0 -1\n")
    assert result.stdout == "hello\na\nb\nc\n"


def test_info_and_dsn(gk: Gokku, cache: str) -> None:
    info = gk.ok("redis:info", cache).stdout
    for expected in ("Status:       running", "Redis 7", "Keys:         2", "Connections:  0"):
        assert expected in info
    # Gokku's form, redis://:PASSWORD@HOST:PORT, which client libraries read as "no user
    # name"; redis-cli 7.0's -u sends an empty user name instead, so take the URL apart.
    dsn = urllib.parse.urlsplit(gk.ok("redis:info", cache, "--dsn").stdout.strip())
    assert (dsn.scheme, dsn.username) == ("redis", "")
    env = {"REDIS_HOST": dsn.hostname, "REDIS_PORT": str(dsn.port), "REDIS_PASSWORD": dsn.password}
    assert redis_cli_directly(env, "GET", "greeting") == b"hello\n"


def test_logs(gk: Gokku, cache: str) -> None:
    assert "Ready to accept connections" in gk.ok("redis:logs", cache).stdout
    assert len(gk.ok("redis:logs", cache, "-n", "2").stdout.splitlines()) == 2


def test_stop_keeps_the_data_and_start_all_brings_it_back(gk: Gokku, cache: str) -> None:
    gk.ok("redis:connect", cache, "SET", "written-before-stop", "yes")
    pid = server_pid(gk.root / "services" / cache)
    gk.ok("redis:stop", cache)
    assert wait_gone(pid)
    assert "Status:       stopped" in gk.ok("redis:info", cache).stdout
    assert gk.ok("redis:status", cache).stdout == "stopped\n"
    assert statuses(gk)[cache] == "stopped"
    for command in ("export", "connect", "import"):
        refused = gk(f"redis:{command}", cache, input=b"x")
        assert refused.code == 1
        assert f"service '{cache}' is stopped" in refused.stderr
    gk.ok("services:start", "--all")
    assert cli(gk, cache, "GET", "written-before-stop") == "yes"
    assert statuses(gk)[cache] == "running"
    gk.ok("redis:restart", cache)
    assert cli(gk, cache, "GET", "written-before-stop") == "yes"
    gk.ok("redis:connect", cache, "DEL", "written-before-stop")


def test_a_service_that_does_not_exist(gk: Gokku) -> None:
    for command in ("info", "export", "connect", "stop"):
        result = gk(f"redis:{command}", "nope")
        assert result.code == 1, command
        assert "service 'nope' does not exist" in result.stderr


def test_a_corrupt_snapshot_changes_nothing(gk: Gokku, cache: str) -> None:
    rdb = bytearray(gk.ok("redis:export", cache).out)
    rdb[-12] ^= 0xFF
    refusals = {
        bytes(rdb): "the RDB snapshot is corrupt ([offset",
        bytes(rdb[: len(rdb) // 2]): "the RDB snapshot is corrupt (",
        b"SET greeting bye\n": "this is not an RDB snapshot (it does not start with REDIS)",
        b"": "nothing on stdin: pipe a snapshot in",
    }
    for bad, message in refusals.items():
        result = gk("redis:import", cache, input=bad)
        assert result.code == 1
        assert message in result.stderr
        assert "nothing was changed" in result.stderr or not bad
        assert cli(gk, cache, "GET", "greeting") == "hello"


def test_a_port_in_use_at_create_time_is_skipped(gk: Gokku) -> None:
    taken = next_available_port(gk)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        gk.ok("services:create", "redis", "--name", "busy")
        port = port_of(gk, "busy")
        assert port != taken
        assert cli(gk, "busy", "CONFIG", "GET", "port").split() == ["port", str(port)]
        with socket.create_connection(("127.0.0.1", taken)):
            pass  # the squatter still has its port
    gk.ok("redis:destroy", "busy", "--force")


def test_help(gk: Gokku) -> None:
    assert "gokku redis:export SERVICE > FILE.rdb" in gk.ok("redis:help").stdout


def test_a_typo_in_a_service_name_gets_a_hint(gk: Gokku, cache: str) -> None:
    for command in ("redis:info", "redis:export", "redis:connect"):
        result = gk(command, "cahce")
        assert (result.code, result.out) == (1, b"")
        assert result.stderr == (
            " !     service 'cahce' does not exist (see: gokku services:list); "
            "did you mean 'cache'?\n"
        )
