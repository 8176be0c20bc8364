"""The audit line is never lost, through both doors with the OpenSSH client: whatever
bytes the command holds, whether it is refused, fails, crashes or succeeds."""

import json
import logging
import os
import pwd
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Gokku
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair

from gokku.paths import default_root

ODD = ["a\\b", "\\xff", "\x1b[31m", "\x7f", "\u0085", "\u2028", "\u2029", "²"]
ODD_ESCAPED = ["a\\\\b", "\\\\xff", "\\x1b[31m", "\\x7f", "\\u0085", "\\u2028", "\\u2029", "²"]


def _raw_lines(root: Path) -> list[bytes]:
    """The audit log as bytes, split where a byte-oriented tool splits it (newlines)."""
    return (root / "log" / "audit.log").read_bytes().split(b"\n")[:-1]


def test_every_command_gets_one_line_whatever_its_bytes(door: Door) -> None:
    """C0, C1, U+2028/2029, a backslash and a byte that is not UTF-8 (both doors take
    the client's bytes as they came): the command runs on those exact bytes, and its line
    is one line for any tool, valid UTF-8 JSON, and tells them apart."""
    words, shown = [*ODD, "K\udcff"], [*ODD_ESCAPED, "K\\xff"]
    commands = [
        ("t:args " + shlex.join(words), 0, ["t:args", *shown]),
        ("t:nosuch " + shlex.join(words), 127, ["t:nosuch", *shown]),  # refused
        ("t:args '\u2028", 2, None),  # cannot be split
    ]
    for command, code, argv in commands:
        before = len(_raw_lines(door.root)) if (door.root / "log" / "audit.log").exists() else 0
        result = door.ssh(command)
        assert result.code == code, result.stderr
        if code == 0:
            expected = b"".join(b"[" + os.fsencode(word) + b"]\n" for word in words)
            assert result.out == expected
        lines = _raw_lines(door.root)
        assert len(lines) == before + 1
        text = lines[-1].decode("utf-8")
        assert text.splitlines() == [text]  # no U+2028, U+0085 or the like left raw
        entry = json.loads(text)
        assert entry["argv"] == argv and entry["exit"] == code and entry["key"] == "alice"


def test_an_unusable_registry_is_named_under_the_root_served(
    gokku: Gokku, alice: KeyPair, test_plugin: str, sshd: int
) -> None:
    """Under sshd the forced command runs without GOKKU_ROOT, as the login user: its
    default root is not the one served (``--root``). A registry the door cannot use
    (here: a key record whose name is a list, as no Gokku writes one) is one line for the
    client naming the served root's file, and the command still has its audit line."""
    door = Door("openssh", sshd, pwd.getpwuid(os.geteuid()).pw_name, alice, gokku.root)
    registry = gokku.root / "ssh" / "keys.json"
    document = json.loads(registry.read_text())
    document["keys"][0]["name"] = ["alice"]
    registry.write_text(json.dumps(document))
    result = door.ssh("t:args x")
    assert result.code == 1
    (line,) = result.stderr.splitlines()
    # The served root's registry is the one read and named, not the login user's default.
    assert line.startswith(f" !     {registry} is not a key registry"), line
    (entry,) = door.audit()
    assert entry["argv"] == ["t:args", "x"] and entry["exit"] == 1 and entry["key"] == ""


# Where the planted crash goes off: routing ``ssh-command`` itself (before the door has
# read its arguments), looking the key up (the door's own code), running the command.
CRASH_SITES = {
    "routing the door": ("gokku.dispatcher", "route"),
    "key lookup": ("gokku.keys", "by_fingerprint"),
    "the command": ("gokku.commands.plugin_exec", "run_plugin_command"),
}


@pytest.mark.parametrize("site", CRASH_SITES)
def test_a_crash_under_sshd_is_logged_under_the_root_served(
    gokku: Gokku, alice: KeyPair, test_plugin: str, sshd: int, tmp_path: Path, site: str
) -> None:
    """A real crash in the forced command: a ``sitecustomize`` on a PYTHONPATH that only
    the forced command gets (gokku.yml's ``gokku_command``) makes a function of Gokku
    raise. The client gets one line; the traceback is in the served root's log, not in
    the login user's default root; the command has its one audit line, even when the
    crash came before the door's own code (then the CLI writes it)."""
    module, function = CRASH_SITES[site]
    marker = f"planted-{os.urandom(6).hex()}"
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "sitecustomize.py").write_text(
        f"import {module}\n\n\ndef crash(*args, **kwargs):\n"
        f"    raise RuntimeError({marker!r})\n\n\n{module}.{function} = crash\n"
    )
    settings = {
        "ssh": {"gokku_command": f"env PYTHONPATH={REPO}:{plant} {sys.executable} -m gokku"}
    }
    (gokku.root / "gokku.yml").write_text(yaml.safe_dump(settings))
    gokku.ok(
        "ssh-keys:add", "alice", str(alice.path) + ".pub", "--role", "admin"
    )  # lines rewritten
    assert str(plant) in (gokku.root / "ssh" / "authorized_keys").read_text()
    default_log = default_root() / "log" / "gokku.log"
    door = Door("openssh", sshd, pwd.getpwuid(os.geteuid()).pw_name, alice, gokku.root)
    result = door.ssh("t:args x")
    assert result.code == 1
    assert result.stderr == (
        f" !     internal error: RuntimeError: {marker}; details in log/gokku.log\n"
    )
    logged = (gokku.root / "log" / "gokku.log").read_text()
    assert "Traceback" in logged and f"RuntimeError: {marker}" in logged
    assert not default_log.exists() or marker not in default_log.read_text()
    (entry,) = door.audit()  # even where the door's own code, which writes it, never ran
    assert entry["argv"] == ["t:args", "x"] and entry["exit"] == 1
    (key,) = json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout)
    assert entry["fingerprint"] == key["fingerprint"]


# A CR alone, a CRLF, C0, DEL, C1, U+2028, quotes, a dollar, a backslash, a trailing blank.
ODD_VALUE = "a\rb\r\nc\x01\x7f\u0085\u2028 '\"$x\\ "


def _sourced(env_file: Path) -> bytes:
    """What Bash leaves in K after sourcing the file, byte for byte."""
    script = 'set -a; . "$1"; printf %s "$K"'
    return subprocess.run(
        ["bash", "-c", script, "bash", str(env_file)], check=True, capture_output=True
    ).stdout


def test_a_value_keeps_its_cr_and_odd_bytes(door: Door, gokku: Gokku) -> None:
    """What ``config:get``, ``config:list`` and ``config:export`` say is what Bash sources
    from the ``.env``; a value that is not UTF-8 is refused whole."""
    gokku.ok("apps:create", "api")
    assert door.ssh("config:set -a api " + shlex.join([f"K={ODD_VALUE}"])).code == 0
    env_file = gokku.root / "apps" / "api" / "shared" / ".env"
    sourced = _sourced(env_file)
    assert sourced == ODD_VALUE.encode()
    assert door.ssh("config:get -a api K").out == sourced + b"\n"
    listed = json.loads(door.ssh("config:list -a api --format json").out)
    assert listed["K"].encode() == sourced
    exported = door.ssh("config:export api").out.decode()
    evaluated = subprocess.run(
        ["bash", "-c", exported + '\nprintf %s "$K"'], check=True, capture_output=True
    ).stdout
    assert evaluated == sourced
    before = env_file.read_bytes()
    refused = door.ssh("config:set -a api K=\udcff")
    assert refused.code == 2
    assert refused.stderr == " !     the value of K is not UTF-8 text; nothing was changed\n"
    assert env_file.read_bytes() == before


def test_an_asyncssh_shaped_otherwise_is_left_alone(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The embedded server takes any bytes by a patch on asyncssh's exec handling: an
    asyncssh whose session start changed is not patched (it then refuses such a command)."""
    from asyncssh.channel import SSHServerChannel

    from gokku.ssh import rawcommand

    original = SSHServerChannel._process_exec_request
    monkeypatch.setattr(SSHServerChannel, "_start_session", lambda self, command: True)
    with caplog.at_level(logging.WARNING, logger="gokku.serve"):
        assert rawcommand.install() is False
    assert SSHServerChannel._process_exec_request is original
    assert "exec requests not patched: SSHServerChannel._start_session changed" in caplog.text
