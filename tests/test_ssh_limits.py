"""One key cannot lock everyone out of the embedded server: a key's connections and
sessions are capped, member keys leave slots that only admin keys take, and a removed
key's open connections are closed at once. Through sshd's forced command a key's
sessions are capped and hung up the same way (its connections are sshd's to limit)."""

import asyncio
import contextlib
import os
import pwd
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, asyncssh_connect, free_port, make_key

from gokku.ssh.config import SSHConfig

DEFAULTS = SSHConfig()
# An admin gets in, and a removed key's sessions end, within this whatever a member holds:
# half the login grace (20 s) that an admin kept waiting behind a member would wait out,
# and room enough for a login on a 2-core host busy with other tests (20 ms when quiet).
ADMIN_WAIT = 10.0
# Streams until hung up, as `redis:logs -f` does.
FOLLOW = 'echo ready\nwhile :; do echo "tick $SECONDS"; sleep 1; done\n'


@pytest.fixture
def follow_plugin(gokku: Gokku, tmp_path: Path) -> str:
    tree = write_plugin(tmp_path / "src" / "f", commands={"commands/follow": FOLLOW})
    (tree / "plugin.yml").write_text("commands:\n  follow: {access: any}\n")
    gokku.ok("plugins:add", str(tree), "--name", "f")
    return "f"


@pytest.fixture
def mallory(gokku: Gokku, keydir: Path, ssh_config: None) -> KeyPair:
    """A member key with no grants at all."""
    key = make_key(keydir, "mallory")
    gokku.ok("ssh-keys:add", "mallory", input=key.public.encode())
    return key


async def _hold(stack: contextlib.AsyncExitStack, port: int, key: KeyPair, tries: int) -> list:
    """Open ``tries`` connections one after another and keep those that work (a
    connection over a cap is dropped once logged in, before it runs anything)."""
    kept = []
    for _ in range(tries):
        try:
            conn = await asyncssh_connect(port, key)
            await conn.run("version", check=True)
        except (asyncssh.Error, OSError):
            continue
        stack.push_async_exit(conn)
        kept.append(conn)
    return kept


async def _admin_runs_version(port: int, key: KeyPair) -> float:
    """Seconds an admin takes to connect and run ``version``."""
    started = time.monotonic()
    async with asyncssh_connect(port, key) as conn:
        result = await conn.run("version")
    assert result.exit_status == 0, result.stderr
    return time.monotonic() - started


@pytest.mark.parametrize(
    ("ssh_settings", "cap"),
    [
        ({}, DEFAULTS.max_connections_per_key),
        # Several member keys, or one with a generous cap, fill what members may hold:
        ({"max_connections": 10, "admin_connections": 4, "max_connections_per_key": 99}, 6),
        ({"max_connections_per_address": 3}, 3),  # the admin comes from the same address
    ],
    ids=["per-key", "admin-reserve", "per-address"],
)
def test_a_member_holding_all_it_may_leaves_admins_in(
    server: int, alice: KeyPair, mallory: KeyPair, cap: int
) -> None:
    async def scenario() -> float:
        async with contextlib.AsyncExitStack() as stack:
            kept = await _hold(stack, server, mallory, cap + 3)
            assert len(kept) == cap
            return await _admin_runs_version(server, alice)

    assert asyncio.run(scenario()) < ADMIN_WAIT


@pytest.mark.parametrize("ssh_settings", [{"workers": 2}])
def test_a_member_cannot_open_more_sessions_than_its_key_may(
    server: int, alice: KeyPair, mallory: KeyPair, follow_plugin: str
) -> None:
    """Two hundred long streams tried over all the connections it may hold: the key's
    session cap stops them, across the server's workers; one that ends frees its slot."""
    per_connection = -(-200 // DEFAULTS.max_connections_per_key)

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            conns = await _hold(stack, server, mallory, DEFAULTS.max_connections_per_key)
            streams, refusals = [], []
            for conn in conns:
                for _ in range(per_connection):
                    try:
                        stream = await conn.create_process("f:follow")
                    except asyncssh.ChannelOpenError as exc:
                        refusals.append(exc.reason)
                        continue
                    stack.push_async_callback(_hang_up, stream)
                    streams.append(stream)
            for stream in streams:
                assert await stream.stdout.readline() == "ready\n"
            assert len(streams) == DEFAULTS.max_sessions_per_key
            assert "too many sessions with key mallory" in refusals
            assert await _admin_runs_version(server, alice) < ADMIN_WAIT
            streams[0].send_signal("TERM")  # it ends: its slot is free once its status is sent
            await streams[0].wait()
            again = await conns[-1].create_process("f:follow")
            stack.push_async_callback(_hang_up, again)
            assert await again.stdout.readline() == "ready\n"

    asyncio.run(scenario())


async def _hang_up(process: asyncssh.SSHClientProcess) -> None:
    process.close()
    await process.wait_closed()


def test_removing_a_key_closes_its_connections_at_once(
    gokku: Gokku, server: int, alice: KeyPair, mallory: KeyPair, follow_plugin: str
) -> None:
    """Idle or streaming, every connection of the key is closed; others stay open."""

    async def scenario() -> float:
        async with contextlib.AsyncExitStack() as stack:
            idle = await _hold(stack, server, mallory, 3)
            streaming = await stack.enter_async_context(await asyncssh_connect(server, mallory))
            stream = await streaming.create_process("f:follow")
            assert await stream.stdout.readline() == "ready\n"
            admin = await stack.enter_async_context(await asyncssh_connect(server, alice))
            await asyncio.to_thread(gokku.ok, "ssh-keys:remove", "mallory")
            started = time.monotonic()
            closing = [conn.wait_closed() for conn in (*idle, streaming)]
            await asyncio.wait_for(asyncio.gather(*closing, stream.wait_closed()), 10)
            took = time.monotonic() - started
            assert (await admin.run("version")).exit_status == 0
            return took

    assert asyncio.run(scenario()) < ADMIN_WAIT


@pytest.mark.parametrize("ssh_settings", [{"max_connections": 8, "admin_connections": 9}])
def test_a_reserve_larger_than_the_whole_is_refused_at_start(gokku: Gokku, ssh_config) -> None:
    result = gokku("serve", "--port", str(free_port()), timeout=60)
    assert result.code == 1
    # Its last line (before it, as root, serve says the sandbox refuses apps' code).
    assert result.stderr.splitlines()[-1:] == [
        " !     ssh.admin_connections (9) must not exceed ssh.max_connections (8)"
    ]
    assert not (gokku.root / "ssh" / "host_ed25519_key").exists()  # refused before anything


def _follow(door: Door, key: KeyPair) -> subprocess.Popen:
    """``f:follow`` through OpenSSH's client, streaming until it ends."""
    return subprocess.Popen(
        [*door.ssh_argv(key=key.path), "--", "f:follow"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("ssh_settings", [{"max_sessions_per_key": 3}])
def test_through_sshd_a_key_has_its_session_cap_and_is_hung_up_when_removed(
    gokku: Gokku, sshd: int, alice: KeyPair, mallory: KeyPair, follow_plugin: str
) -> None:
    """sshd's forced command counts a key's sessions as the embedded server does: a member
    gets three long streams and a one-line refusal for the fourth, an admin is not
    capped; removing the member's key hangs up its streams at once (within ADMIN_WAIT)."""
    door = Door("openssh", sshd, pwd.getpwuid(os.geteuid()).pw_name, alice, gokku.root)
    streams: list[subprocess.Popen] = []
    try:
        for key in (mallory, mallory, mallory, alice, alice, alice, alice):
            streams.append(_follow(door, key))
            assert streams[-1].stdout.readline() == b"ready\n"
        refused = door.ssh("f:follow", key=mallory.path, timeout=30)
        assert refused.code == 1 and refused.out == b""
        assert refused.stderr == " !     too many sessions with key mallory\n"
        (entry,) = [e for e in door.audit() if e.get("exit") == 1]
        assert entry["key"] == "mallory" and entry["argv"] == ["f:follow"]

        gokku.ok("ssh-keys:remove", "mallory")
        started = time.monotonic()
        for stream in streams[:3]:
            stream.wait(10)
        assert time.monotonic() - started < ADMIN_WAIT
        assert all(stream.poll() is None for stream in streams[3:])  # the admin's go on
    finally:
        for stream in streams:
            stream.kill()
            stream.wait()
