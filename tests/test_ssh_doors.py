"""The same scenarios through both doors with the OpenSSH client: ``gokku serve`` and a
real sshd whose authorized_keys file the registry wrote (forced ``gokku ssh-command``)."""

import hashlib
import os
import signal
import socket
import subprocess
import time

import pytest
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, free_port, group_alive, processes_under, wait_until


def test_argv_survives_quoting(door: Door) -> None:
    result = door.ssh("""t:args 'a b' "c\\"d" '' $HOME '*' ';' x=1""")
    assert result.code == 0, result.stderr
    assert result.stdout == '[a b]\n[c"d]\n[]\n[$HOME]\n[*]\n[;]\n[x=1]\n'


@pytest.fixture
def embedded(server: int, alice: KeyPair, gokku, test_plugin: str) -> Door:
    """The embedded server alone: for what only it can promise (sshd starts the forced
    command under the client's pty itself, before gokku runs)."""
    return Door("embedded", server, "gokku", alice, gokku.root)


def test_terminal_keys_in_the_data_do_not_kill_the_door(embedded: Door) -> None:
    """Under a pty, bytes 0x03/0x1c/0x1a in the client's data signal the foreground job;
    when no script runs, that is the door, which still writes its audit line.

    The embedded server starts its worker with them ignored. sshd starts the forced
    command itself, under the pty already, and bytes that arrive first reach its shell
    before gokku runs: that door cannot promise this (use the embedded server, or no -t
    for data)."""
    result = embedded.ssh("t:args x", "-tt", input=b"\x03\x1c\x1a" * 2000)
    # Keys that arrive while the script still runs interrupt it, as on any terminal (a
    # busy machine makes that likely): the script's 130, never the door's death.
    assert result.code in (0, 130), (result.code, result.stderr)
    last = embedded.audit()[-1]
    assert last["argv"] == ["t:args", "x"] and last["exit"] == result.code


def test_data_through_a_forced_terminal_arrives_exactly(embedded: Door) -> None:
    """``ssh -tt HOST import < dump``: a command that reads data gets no pty, so no byte is
    echoed, rewritten or taken for Ctrl-C. sshd grants the pty itself before the command
    runs (gokku makes it raw only once it starts), so the OpenSSH door cannot promise it."""
    data = bytes(range(256)) * 512
    result = embedded.ssh("t:sink", "-tt", input=data)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == hashlib.sha256(data).hexdigest()


def test_ctrl_c_stops_a_binary_command_under_ssh_t(door: Door) -> None:
    """ssh -t puts the client's terminal in raw mode, so Ctrl-C travels as a byte; a
    binary command runs without a pty (or a raw one) and must still be interrupted."""
    proc = subprocess.Popen(
        door.ssh_argv("-tt") + ["--", "t:spin"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert proc.stdout.readline().strip() == b"ready"
        proc.stdin.write(b"\x03")
        proc.stdin.flush()
        assert proc.wait(10) == 130
    finally:
        proc.kill()
        proc.wait()


def test_scripts_start_in_the_state_directory(door: Door, gokku) -> None:
    """Over SSH the server's own working directory means nothing to the caller."""
    assert door.ssh("t:where").stdout == f"{gokku.root}\n"


def test_config_value_stored_exactly(door: Door, gokku) -> None:
    gokku.ok("apps:create", "api")
    assert door.ssh("""config:set -a api 'MSG=a b "c"'""").code == 0
    result = door.ssh("config:get -a api MSG")
    assert result.stdout == 'a b "c"\n'


@pytest.mark.parametrize("code", [0, 1, 42, 130])
def test_exit_code_passes_through(door: Door, code: int) -> None:
    result = door.ssh(f"t:exit {code}")
    assert result.code == code
    assert result.stdout == f"exiting {code}\n"


def test_stdin_bytes_and_eof_reach_the_script(door: Door) -> None:
    data = bytes(range(256)) * 4099
    result = door.ssh("t:sink", input=data)
    assert result.code == 0, result.stderr
    assert result.stdout.strip() == hashlib.sha256(data).hexdigest()


def test_stdout_is_bytes(door: Door) -> None:
    assert door.ssh("t:bytes").out == b"\x00\x01\n\r\n\xff"


def test_binary_command_bypasses_the_pty(door: Door) -> None:
    """``bytes`` declares binary stdout: even under ``ssh -tt`` no CR is added."""
    result = door.ssh("t:bytes", "-tt")
    assert result.out == b"\x00\x01\n\r\n\xff"


def test_script_learns_who_called(door: Door, gokku) -> None:
    fingerprint = gokku.ok("ssh-keys:list", "--format", "json").stdout
    result = door.ssh("t:whoami")
    name, fp = result.stdout.split()
    assert name == "alice" and fp in fingerprint and fp.startswith("SHA256:")


def test_pty_only_when_asked(door: Door) -> None:
    assert door.ssh("t:tty").stdout == "no tty\n"
    result = door.ssh("t:tty", "-tt", "-o", "SetEnv=TERM=vt220")
    assert result.stdout.startswith("tty TERM="), result.stdout


def test_empty_command_prints_help_and_exits_2(door: Door) -> None:
    for command in ("", None):
        result = door.ssh(command)
        assert result.code == 2
        assert "Usage: gokku" in result.stdout


def test_unbalanced_quotes_are_a_usage_error(door: Door, gokku) -> None:
    before = gokku.snapshot()
    result = door.ssh("config:set -a api 'MSG=oops")
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and "balance your quotes" in result.stderr
    after = gokku.snapshot()
    after.pop("log/audit.log", None), before.pop("log/audit.log", None)
    assert before == after


def test_unknown_command_is_127(door: Door) -> None:
    result = door.ssh("no-such-thing")
    assert result.code == 127
    assert "unknown command" in result.stderr


def test_audit_line_per_command(door: Door) -> None:
    data = b"x" * 1000
    assert door.ssh("t:sink 'a b'", input=data).code == 0
    door.ssh("t:exit 42")
    first, second = door.audit()[-2:]
    assert first["key"] == "alice" and first["fingerprint"].startswith("SHA256:")
    assert first["argv"] == ["t:sink", "a b"] and first["exit"] == 0
    assert first["bytes_in"] == 1000 and first["bytes_out"] == 65
    assert first["remote"] == "127.0.0.1" and first["duration"] >= 0
    assert second["argv"] == ["t:exit", "42"] and second["exit"] == 42
    assert first["id"] != second["id"] and first["time"]


def test_unknown_key_is_refused(door: Door, keydir) -> None:
    from sshkit import make_key

    stranger = make_key(keydir, "stranger")
    result = door.ssh("t:whoami", key=stranger.path)
    assert result.code == 255
    assert "Permission denied" in result.stderr


def test_removed_key_is_refused_without_restart(door: Door, gokku) -> None:
    assert door.ssh("t:whoami").code == 0
    gokku.ok("ssh-keys:remove", "alice")
    assert door.ssh("t:whoami").code == 255
    gokku.ok("ssh-keys:add", "alice", str(door.key.path) + ".pub", "--role", "admin")
    assert door.ssh("t:whoami").code == 0


def test_forwarding_is_refused(door: Door) -> None:
    result = door.ssh("t:exit 0", "-o", "ExitOnForwardFailure=yes", "-R", "0:127.0.0.1:9")
    assert result.code == 255
    assert "forwarding failed" in result.stderr
    assert door.ssh("t:forwarded", "-A", "-X").stdout == "agent=none display=none\n"


def test_local_forwarding_is_refused(door: Door) -> None:
    port = free_port()
    client = subprocess.Popen(
        door.ssh_argv("-L", f"{port}:127.0.0.1:{door.port}") + ["t:hold idle"],
        stdout=subprocess.PIPE,
    )
    try:
        assert client.stdout.readline() == b"ready\n"
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            assert sock.recv(100) == b""  # the channel open was refused: nothing tunnels
    finally:
        # SIGKILL: OpenSSH's client loop can miss a SIGTERM under load and wait forever.
        client.kill()
        client.wait()


@pytest.mark.parametrize("direction", ["up", "down", "idle"])
def test_killed_client_leaves_no_process(door: Door, direction: str) -> None:
    """kill -9 the client mid-transfer: the script's whole group is gone within 5 s."""
    client = subprocess.Popen(
        door.ssh_argv() + [f"t:hold {direction}"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE if direction != "down" else subprocess.DEVNULL,
    )
    held = door.root.parent / f"held-{direction}"
    try:
        assert wait_until(lambda: held.exists() and held.read_text().strip(), 20)
        pgid = int(held.read_text())
        if direction == "up":
            for _ in range(64):
                client.stdin.write(b"u" * 65536)
        time.sleep(0.3)
        assert group_alive(pgid)
    finally:
        os.kill(client.pid, signal.SIGKILL)
        client.wait()
    assert wait_until(lambda: not group_alive(pgid), 5), "script group outlived the client"
    assert wait_until(lambda: not processes_under(door.root), 5), processes_under(door.root)


@pytest.mark.parametrize(
    ("command", "what"),
    [("apps:destroy api", "app"), ("services:destroy s1", "service"), ("t:destroy s1", "service")],
)
def test_destroying_asks_for_the_name_on_a_terminal(door: Door, gokku, command, what) -> None:
    """As Dokku: on a terminal the name is typed back; without one, --force or nothing."""
    gokku.ok("apps:create", "api")
    gokku.ok("services:create", "t", "--name", "s1")
    name = command.split()[-1]
    before = gokku.snapshot()
    for options, typed in (((), b""), (("-tt",), b"wrong\n")):
        refused = door.ssh(command, *options, input=typed)
        assert refused.code == 1, refused.stderr
        said = (refused.err + refused.out).decode()
        assert f"Destroying {what} {name!r} deletes" in said or "confirm on a terminal" in said
        assert "nothing was destroyed" in said or "or add --force" in said
    changed = {k for k, v in gokku.snapshot().items() if before.get(k) != v}
    assert changed == {"log/audit.log"}
    confirmed = door.ssh(command, "-tt", input=name.encode() + b"\n")
    assert confirmed.code == 0, confirmed.out
    assert f'To proceed, type "{name}"' in confirmed.stdout  # one stream under a pty
    gone = gokku.root / ("apps" if what == "app" else "services") / name
    assert not gone.exists()
