"""``ssh-keys:*``: the registry, its refusals, and the authorized_keys file it writes."""

import json
import subprocess
import threading
from pathlib import Path

import pytest
from sshkit import *  # noqa: F403 - fixtures
from sshkit import KeyPair, make_key


@pytest.fixture
def bob(keydir: Path) -> KeyPair:
    return make_key(keydir, "bob")


def _fingerprint(key: KeyPair) -> str:
    out = subprocess.run(
        ["ssh-keygen", "-l", "-E", "sha256", "-f", str(key.path) + ".pub"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()[1]


def test_add_from_path_and_stdin_then_list(gokku, alice: KeyPair, bob: KeyPair) -> None:
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
    listed = json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout)
    assert [(k["name"], k["type"], k["fingerprint"]) for k in listed] == [
        ("alice", "ssh-ed25519", _fingerprint(alice)),
        ("bob", "ssh-ed25519", _fingerprint(bob)),
    ]
    assert all(k["added"].endswith("Z") for k in listed)
    text = gokku.ok("ssh-keys:list").stdout
    assert text.splitlines()[0].split() == [
        "NAME",
        "ROLE",
        "TYPE",
        "FINGERPRINT",
        "GRANTS",
        "ADDED",
    ]
    assert _fingerprint(bob) in text


def test_authorized_keys_lines_force_the_command(gokku, alice: KeyPair) -> None:
    path = gokku.root / "ssh" / "authorized_keys"
    (line,) = path.read_text().splitlines()
    options, key_type, data, comment = line.rsplit(" ", 3)
    assert options.startswith('command="') and options.endswith('",restrict,pty')
    listed = json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout)
    expected = f"ssh-command --root {gokku.root} --fingerprint {listed[0]['fingerprint']}"
    assert options.endswith(expected + '",restrict,pty')
    assert f"{key_type} {data} " in alice.public and comment == "alice"
    assert path.stat().st_mode & 0o777 == 0o600


def test_same_key_same_name_is_a_no_op(gokku, alice: KeyPair) -> None:
    before = gokku.snapshot()
    result = gokku.ok("ssh-keys:add", "alice", str(alice.path) + ".pub")
    assert "already registered" in result.stderr
    assert gokku.snapshot() == before


@pytest.mark.parametrize(
    "make_input,message",
    [
        (lambda a, b: 'command="sh" ' + b.public, "carries options"),
        (lambda a, b: 'no-pty,from="*" ' + b.public, "carries options"),
        (lambda a, b: b.public + b.public, "one key at a time"),
        (lambda a, b: b.path.read_text(), "private key"),
        (lambda a, b: "ssh-ed25519 AAAA!!!!", "not base64"),
        (lambda a, b: "ssh-ed25519 " + b.public.split()[1][:-8], "invalid public key"),
        (lambda a, b: "ssh-rsa " + b.public.split()[1], "not a ssh-rsa key"),
        (lambda a, b: "hello world", "not an SSH public key"),
        (lambda a, b: "", "no public key given"),
        (lambda a, b: a.public, "already registered as 'alice'"),
    ],
)
def test_bad_keys_are_refused(gokku, alice: KeyPair, bob: KeyPair, make_input, message) -> None:
    before = gokku.snapshot()
    result = gokku("ssh-keys:add", "carol", input=make_input(alice, bob).encode())
    assert result.code != 0
    assert message in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert gokku.snapshot() == before


def test_name_taken_by_another_key_and_bad_names(gokku, alice: KeyPair, bob: KeyPair) -> None:
    before = gokku.snapshot()
    result = gokku("ssh-keys:add", "alice", input=bob.public.encode())
    assert result.code == 1 and "already registered" in result.stderr
    result = gokku("ssh-keys:add", "Bad/Name", input=bob.public.encode())
    assert result.code == 2 and "invalid key name" in result.stderr
    result = gokku("ssh-keys:add", "bob", "/nonexistent.pub")
    assert result.code == 1 and "no such file" in result.stderr
    assert gokku.snapshot() == before


def test_remove_by_name_and_fingerprint(gokku, alice: KeyPair, bob: KeyPair) -> None:
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
    gokku.ok("ssh-keys:remove", "--fingerprint", _fingerprint(bob))
    gokku.ok("ssh-keys:remove", "alice")
    assert json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout) == []
    assert (gokku.root / "ssh" / "authorized_keys").read_text() == ""
    before = gokku.snapshot()
    assert gokku("ssh-keys:remove", "alice").code == 1
    assert gokku("ssh-keys:remove").code == 2
    assert gokku("ssh-keys:remove", "alice", "--fingerprint", "SHA256:x").code == 2
    assert gokku.snapshot() == before


def test_concurrent_adds_all_land(gokku, keydir: Path, ssh_config) -> None:
    pairs = [make_key(keydir, f"k{i}") for i in range(8)]
    threads = [
        threading.Thread(target=gokku.ok, args=("ssh-keys:add", f"k{i}", str(p.path) + ".pub"))
        for i, p in enumerate(pairs)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    listed = json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout)
    assert sorted(k["name"] for k in listed) == [f"k{i}" for i in range(8)]
    assert len((gokku.root / "ssh" / "authorized_keys").read_text().splitlines()) == 8


def test_ssh_command_refuses_unknown_key_and_missing_flag(gokku, alice: KeyPair) -> None:
    stranger = {"SSH_ORIGINAL_COMMAND": "whoami"}
    result = gokku("ssh-command", "--fingerprint", "SHA256:nobody", env=stranger)
    assert result.code == 1 and "no longer registered" in result.stderr
    assert gokku("ssh-command", env={"SSH_ORIGINAL_COMMAND": "whoami"}).code == 2


def test_bad_ssh_settings_are_refused(gokku) -> None:
    (gokku.root / "gokku.yml").write_text("ssh:\n  max_sesions: 3\n")
    result = gokku("serve")
    assert result.code == 1 and "unknown setting(s) max_sesions" in result.stderr
    (gokku.root / "gokku.yml").write_text("ssh:\n  port: '22'\n")
    assert "must be an integer" in gokku("serve").stderr
    (gokku.root / "gokku.yml").unlink()
    assert gokku("serve", "--port", "99999").code == 2
