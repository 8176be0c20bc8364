"""What the starts every command pays import: the CLI, a plugin helper's callback and the
OpenSSH door's forced command.

Each is a new interpreter, thousands of them on a busy server. ``dataclasses`` (which
brings ``inspect``, ``ast`` and ``dis``) and the methods it generates for a start's
records took about a third of such a start, so the records on these paths are NamedTuples
and plain classes. ``-X importtime`` (``PYTHONPROFILEIMPORTTIME``) lists every import on
stderr; these tests keep the heavy ones off."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

from conftest import Gokku
from sshkit import *  # noqa: F403 - fixtures
from sshlab import KeyPair, make_key

# Imported by no start that does not use them: the did-you-mean and the server.
HEAVY = {"dataclasses", "inspect", "difflib", "asyncssh"}
# Imported only by a start that writes a file or removes a tree (with bz2, lzma, random).
WRITING = {"shutil", "tempfile"}
# What the verbs that run plugin scripts import (the runner, schedules, the doctor, the
# plugin installer): a helper's callbacks into services:* imported it all, 100 ms a call.
SCRIPTS = {"gokku.commands.services", "gokku.runner", "gokku.schedules", "gokku.doctor"}
# Lists the imports on stderr; also gives a CLI call an interpreter of its own.
PROFILED = {"PYTHONPROFILEIMPORTTIME": "1"}


def _imported(stderr: str) -> set[str]:
    return {
        line.rsplit("|", 1)[-1].strip()
        for line in stderr.splitlines()
        if line.startswith("import time:")
    }


def _said(stderr: str) -> str:
    """stderr without the import lines: what the command itself wrote there."""
    return "".join(line for line in stderr.splitlines(True) if not line.startswith("import time:"))


def test_cli_starts_import_nothing_heavy(gokku: Gokku) -> None:
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "api", "KEY=value")
    for argv, out in (
        (["version"], "gokku "),
        (["apps:list"], "api\n"),
        (["config:get", "api", "KEY"], "value\n"),
    ):
        result = gokku(*argv, env=PROFILED)
        assert (result.code, _said(result.stderr)) == (0, ""), argv
        assert result.stdout.startswith(out), argv
        assert "gokku.dispatcher" in _imported(result.stderr)
        assert not (HEAVY | WRITING) & _imported(result.stderr), argv


def test_adding_a_key_checks_it_without_asyncssh(
    gokku: Gokku, keydir: Path, ssh_config: None
) -> None:
    """``ssh-keys:add`` reads the key's fields itself (``gokku.keyblob``): asyncssh's
    import alone was 150 ms of a 160 ms call."""
    key = make_key(keydir, "bob")
    result = gokku("ssh-keys:add", "bob", input=key.public.encode(), env=PROFILED)
    assert result.code == 0, _said(result.stderr)
    assert "gokku.keyblob" in _imported(result.stderr)
    assert not HEAVY & _imported(result.stderr)
    listed = json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout)
    assert [k["name"] for k in listed] == ["bob"]


def test_a_helpers_callback_imports_nothing_heavy(gokku: Gokku) -> None:
    """As plugin-helpers.sh runs it: ``python -P -m gokku.callback`` in an emptied
    environment. The services verbs the helpers call most (a service's config and port)
    import none of what the verbs that run plugin scripts need."""
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "api", "KEY=value")
    env = {key: gokku.env[key] for key in ("GOKKU_ROOT", "PATH", "PYTHONPATH")}
    for argv, out, heavy in (  # out: what the verb prints (a port's number, "a port")
        (["config:get", "-a", "api", "KEY"], "value\n", HEAVY | WRITING),
        (["services:config-get", "nosuch"], "{}\n", HEAVY | SCRIPTS | WRITING),
        (["services:next-port"], "a port", HEAVY | SCRIPTS),
    ):
        done = subprocess.run(
            [gokku.python, "-X", "importtime", "-P", "-m", "gokku.callback", *argv],
            env=env,
            capture_output=True,
            text=True,
        )
        said = "a port" if done.stdout.strip().isdigit() else done.stdout
        assert (done.returncode, said, _said(done.stderr)) == (0, out, ""), argv
        assert not heavy & _imported(done.stderr), argv


def _forced_command(root: Path, key: KeyPair) -> str:
    """The ``command="..."`` Gokku wrote for ``key`` into the OpenSSH door's file."""
    public = key.public.split()[1]
    lines = (root / "ssh" / "authorized_keys").read_text().splitlines()
    line = next(line for line in lines if public in line)
    return shlex.split(line.partition("command=")[2].partition(",restrict")[0])[0]


def test_the_openssh_doors_forced_command_imports_nothing_heavy(
    gokku: Gokku, alice: KeyPair, test_plugin: str
) -> None:
    """The forced command as sshd runs it (``sh -c``, the client's command in
    SSH_ORIGINAL_COMMAND): a built-in verb and a plugin's command."""
    command = _forced_command(gokku.root, alice)
    for original, out in (("version", "gokku "), ("t:args 'x y' z", "[x y]\n[z]\n")):
        env = {
            "PATH": "/usr/bin:/bin",
            "SSH_ORIGINAL_COMMAND": original,
            "SSH_CONNECTION": "127.0.0.1 50000 127.0.0.1 22",
            "PYTHONPROFILEIMPORTTIME": "1",
        }
        done = subprocess.run(["sh", "-c", command], env=env, capture_output=True, text=True)
        assert (done.returncode, _said(done.stderr)) == (0, ""), original
        assert done.stdout.startswith(out), original
        imported = _imported(done.stderr)
        assert "gokku.dispatcher" in imported
        assert not HEAVY & imported, original
        # A plugin's command finds bwrap with shutil.which.
        assert original != "version" or not WRITING & imported


def test_the_servers_import_of_asyncssh_runs_no_compiler(tmp_path: Path) -> None:
    """asyncssh's probe for optional libraries (``gokku.ssh.sshlib``): with a ``gcc``
    and an ``ld`` on PATH (stand-ins that note each call), importing the server runs
    neither, and leaves ``ctypes.util.find_library`` as it was for everyone else."""
    calls = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("gcc", "cc", "ld"):
        (bin_dir / tool).write_text(f"#!/bin/sh\necho {tool} >> {shlex.quote(str(calls))}\n")
        (bin_dir / tool).chmod(0o755)
    probe = (
        "import ctypes.util; before = ctypes.util.find_library; import gokku.ssh.server; "
        "print(ctypes.util.find_library is before, ctypes.util.find_library('c'))"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", probe],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin:/usr/sbin:/sbin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "True libc.so.6\n"), result.stderr
    assert not calls.exists(), calls.read_text()
