"""paramiko and asyncssh clients against the embedded server (asyncssh also against
sshd where OpenSSH cannot: signals and window changes), and the server's hardening."""

import asyncio
import hashlib
import socket
import subprocess
import time

import asyncssh
import paramiko
import pytest
from sshkit import *  # noqa: F403 - fixtures
from sshkit import (
    Door,
    KeyPair,
    group_alive,
    make_key,
    processes_under,
    running_server,
    wait_until,
)

# paramiko ------------------------------------------------------------------------------


@pytest.fixture
def transport(server: int, alice: KeyPair, test_plugin: str) -> paramiko.Transport:
    client = paramiko.Transport(("127.0.0.1", server))
    client.connect(username="gokku", pkey=paramiko.Ed25519Key.from_private_key_file(alice.path))
    yield client
    client.close()


def _paramiko_run(
    transport: paramiko.Transport, command: str, data: bytes = b"", pty: bool = False
) -> tuple[int, bytes, bytes]:
    channel = transport.open_session()
    if pty:
        channel.get_pty(term="xterm", width=91, height=17)
    channel.exec_command(command)
    channel.sendall(data)
    channel.shutdown_write()
    out, err = channel.makefile("rb").read(), channel.makefile_stderr("rb").read()
    return channel.recv_exit_status(), out, err


def test_paramiko_argv_streams_and_exit_codes(transport: paramiko.Transport) -> None:
    assert _paramiko_run(transport, "t:args 'a b' c")[:2] == (0, b"[a b]\n[c]\n")
    data = bytes(range(256)) * 2000
    code, out, _ = _paramiko_run(transport, "t:sink", data)
    assert (code, out.strip()) == (0, hashlib.sha256(data).hexdigest().encode())
    for expected in (1, 42, 130):
        assert _paramiko_run(transport, f"t:exit {expected}")[0] == expected


def test_paramiko_pty(transport: paramiko.Transport) -> None:
    code, out, _ = _paramiko_run(transport, "t:tty", pty=True)
    assert out == b"tty TERM=xterm size=17 91\r\n"
    assert _paramiko_run(transport, "t:tty")[1] == b"no tty\n"
    assert _paramiko_run(transport, "t:bytes", pty=True)[1] == b"\x00\x01\n\r\n\xff"


def test_paramiko_shell_request_gets_help_and_2(transport: paramiko.Transport) -> None:
    channel = transport.open_session()
    channel.invoke_shell()
    assert channel.recv_exit_status() == 2
    assert b"Usage: gokku" in channel.makefile("rb").read()


def test_paramiko_sftp_and_forwarding_are_refused(transport: paramiko.Transport) -> None:
    with pytest.raises(paramiko.SSHException):
        paramiko.SFTPClient.from_transport(transport)
    with pytest.raises(paramiko.ChannelException):
        transport.open_channel("direct-tcpip", ("127.0.0.1", 22), ("127.0.0.1", 0))
    with pytest.raises(paramiko.SSHException):
        transport.request_port_forward("127.0.0.1", 0)


# asyncssh ------------------------------------------------------------------------------


def _connect(port: int, key: KeyPair, username: str = "gokku", **options):
    options.setdefault("client_keys", [str(key.path)])
    return asyncssh.connect(
        "127.0.0.1", port, username=username, known_hosts=None, agent_path=None, **options
    )


def test_asyncssh_argv_streams_and_exit_codes(server: int, alice: KeyPair, test_plugin) -> None:
    async def scenario() -> None:
        async with _connect(server, alice) as conn:
            result = await conn.run("t:args 'a b' '' c", encoding=None)
            assert (result.exit_status, result.stdout) == (0, b"[a b]\n[]\n[c]\n")
            data = bytes(range(256)) * 5000
            result = await conn.run("t:sink", input=data, encoding=None)
            assert result.stdout.strip() == hashlib.sha256(data).hexdigest().encode()
            for code in (0, 1, 42, 130):
                assert (await conn.run(f"t:exit {code}")).exit_status == code

    asyncio.run(scenario())


async def _wait_for(stream: asyncssh.SSHReader, text: str) -> str:
    seen = ""
    while text not in seen:
        try:
            chunk = await asyncio.wait_for(stream.read(1024), 20)
        except TimeoutError:
            raise AssertionError(f"no {text!r} within 20 s; got {seen!r}") from None
        assert chunk, f"stream ended before {text!r}: {seen!r}"
        seen += chunk
    return seen


@pytest.mark.parametrize("name", ["INT", "TERM", "USR1"])
def test_asyncssh_signal_reaches_the_script(server: int, alice: KeyPair, test_plugin, name) -> None:
    """Signal requests (sshd refuses them for forced commands: see the pty test below)."""

    async def scenario() -> None:
        async with _connect(server, alice) as conn:
            process = await conn.create_process(f"t:trap {name}")
            await _wait_for(process.stdout, "ready")
            process.send_signal(name)
            output = await _wait_for(process.stdout, f"got {name}")
            assert f"got {name}" in output
            await asyncio.wait_for(process.wait(), 20)
            assert process.exit_status == 7

    asyncio.run(scenario())


def test_ctrl_c_through_the_pty_interrupts_the_script(door: Door) -> None:
    async def scenario() -> None:
        async with _connect(door.port, door.key, door.user) as conn:
            process = await conn.create_process("t:trap INT", term_type="xterm")
            await _wait_for(process.stdout, "ready")
            process.stdin.write("\x03")
            await _wait_for(process.stdout, "got INT")
            await asyncio.wait_for(process.wait(), 20)
            assert process.exit_status == 7

    asyncio.run(scenario())


def test_asyncssh_window_changes_reach_the_pty(door: Door) -> None:
    async def scenario() -> None:
        async with _connect(door.port, door.key, door.user) as conn:
            process = await conn.create_process(
                "t:resize", term_type="xterm", term_size=(80, 24), request_pty="force"
            )
            await _wait_for(process.stdout, "size 24 80")
            process.change_terminal_size(132, 43)
            await _wait_for(process.stdout, "size 43 132")
            process.stdin.write("\x03")
            await asyncio.wait_for(process.wait(), 20)

    asyncio.run(scenario())


def test_asyncssh_forwarding_and_subsystems_are_refused(
    server: int, alice: KeyPair, test_plugin
) -> None:
    async def scenario() -> None:
        async with _connect(server, alice) as conn:
            with pytest.raises(asyncssh.ChannelListenError):
                await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 9)
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.open_connection("127.0.0.1", server)
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.create_process("t:tty", x11_forwarding=True, x11_display="unix:0")
            with pytest.raises(asyncssh.ChannelOpenError, match="Session request failed"):
                await conn.start_sftp_client()
            result = await conn.run(subsystem="netconf")
            assert result.exit_status == 1 and "not available" in result.stderr
        async with _connect(server, alice, agent_forwarding=True) as conn:
            result = await conn.run("t:forwarded")  # the request is refused, the session runs
            assert result.stdout == "agent=none display=none\n"

    asyncio.run(scenario())


# Authentication and limits -------------------------------------------------------------


def test_wrong_user_is_refused(server: int, alice: KeyPair) -> None:
    async def scenario() -> None:
        with pytest.raises(asyncssh.PermissionDenied):
            await _connect(server, alice, username="root")

    asyncio.run(scenario())


def test_too_many_failed_keys_drop_the_connection(
    server: int, alice: KeyPair, keydir, test_plugin
) -> None:
    strangers = [str(make_key(keydir, f"stranger{i}").path) for i in range(6)]

    async def attempt(count: int) -> None:
        keys = [*strangers[:count], str(alice.path)]
        async with _connect(server, alice, client_keys=keys) as conn:
            assert (await conn.run("t:whoami")).stdout.startswith("alice ")

    asyncio.run(attempt(5))  # five refusals, then the right key: in
    with pytest.raises(asyncssh.DisconnectError, match="too many authentication failures"):
        asyncio.run(attempt(6))


@pytest.mark.parametrize("ssh_settings", [{"max_connections_per_address": 2}])
def test_connections_per_address_are_capped(server: int, gokku, keydir) -> None:
    """For member keys (admin keys are held to the total only: tests/test_ssh_limits.py)."""
    bob = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())

    async def scenario() -> None:
        async with _connect(server, bob), _connect(server, bob):
            # Counted once logged in (a flood that never logs in takes no slot): the
            # connection over the cap is dropped before it runs anything.
            with pytest.raises((asyncssh.Error, ConnectionError)):
                async with _connect(server, bob) as conn:
                    await conn.run("version", check=True)
        async with _connect(server, bob):  # released again
            pass

    asyncio.run(scenario())


@pytest.mark.parametrize("ssh_settings", [{"max_connections": 1, "admin_connections": 0}])
def test_connections_in_total_are_capped(server: int, alice: KeyPair) -> None:
    async def scenario() -> None:
        async with _connect(server, alice):
            # Counted once logged in (a flood that never logs in takes no slot): the
            # connection over the cap is dropped before it runs anything.
            with pytest.raises((asyncssh.Error, ConnectionError)):
                async with _connect(server, alice) as conn:
                    await conn.run("version", check=True)

    asyncio.run(scenario())


@pytest.mark.parametrize("ssh_settings", [{"max_sessions": 2}])
def test_sessions_per_connection_are_capped(server: int, alice: KeyPair, test_plugin) -> None:
    async def scenario() -> None:
        async with _connect(server, alice) as conn:
            first = await conn.create_process("t:hold idle")
            second = await conn.create_process("t:hold idle2")
            with pytest.raises(asyncssh.ChannelOpenError):
                await conn.create_process("t:exit 0")
            first.send_signal("TERM"), second.send_signal("TERM")
            await asyncio.gather(first.wait(), second.wait())
            assert (await conn.run("t:exit 0")).exit_status == 0  # slots freed

    asyncio.run(scenario())


@pytest.mark.parametrize("ssh_settings", [{"login_timeout": 1}])
def test_login_timeout_closes_idle_connections(server: int) -> None:
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.settimeout(10)
        assert sock.recv(100).startswith(b"SSH-2.0-Gokku")
        started = time.monotonic()
        while sock.recv(4096):
            pass
        assert time.monotonic() - started < 5


def test_keys_added_later_work_without_restart(server: int, gokku, keydir, test_plugin) -> None:
    bob = make_key(keydir, "bob")

    async def whoami() -> str:
        async with _connect(server, bob) as conn:
            return (await conn.run("whoami --format json")).stdout

    with pytest.raises(asyncssh.PermissionDenied):
        asyncio.run(whoami())
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
    assert '"name": "bob"' in asyncio.run(whoami())


def test_stopping_the_server_hangs_up_sessions(
    gokku, base_env, ssh_config, alice: KeyPair, test_plugin
) -> None:
    with running_server(base_env) as (proc, port):
        door = Door("embedded", port, "gokku", alice, gokku.root)
        client = subprocess.Popen(door.ssh_argv() + ["t:hold idle"], stdout=subprocess.PIPE)
        assert client.stdout.readline() == b"ready\n"
        pgid = int((gokku.root.parent / "held-idle").read_text())
        proc.terminate()
        assert proc.wait(15) == 0
        assert client.wait(10) != 0
        client.stdout.close()
    assert wait_until(lambda: not group_alive(pgid), 1)
    assert not processes_under(gokku.root)
