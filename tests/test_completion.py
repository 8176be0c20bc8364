"""Shell completion: the script ``gokku completion bash`` prints, loaded into a real bash
whose completion function is called as bash calls it (and once through a real
interactive bash at a terminal), completing built-ins, plugin commands, and over the
client the server's commands, then the apps and services the key may see after the verbs
that take them; the fish script in a real fish (``complete -C``); the zsh script passes
``zsh -n``."""

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, make_key
from test_client import workstation_for


def with_gokku_on_path(env: dict[str, str], folder: Path) -> dict[str, str]:
    """``env`` as a user's shell has it: this checkout's ``gokku`` on PATH."""
    folder.mkdir()
    (folder / "gokku").write_text(f'#!/bin/sh\nexec {sys.executable} -m gokku "$@"\n')
    (folder / "gokku").chmod(0o755)
    return {**env, "PATH": f"{folder}:{os.environ['PATH']}"}


@pytest.fixture
def shell_env(gokku: Gokku, tmp_path: Path) -> dict[str, str]:
    return with_gokku_on_path(gokku.env, tmp_path / "bin")


def save(script: bytes, folder: Path) -> Path:
    path = folder / "gokku-completion.bash"
    path.write_bytes(script)
    return path


@pytest.fixture
def script(gokku: Gokku, tmp_path: Path) -> Path:
    return save(gokku.ok("completion", "bash").out, tmp_path)


def complete(
    env: dict[str, str], script: Path, line: str, *words: str, cwd: Path | None = None
) -> list[str]:
    """What ``_gokku`` replies with the cursor at the end of ``line``, which bash split
    into ``words`` (at spaces and, by COMP_WORDBREAKS, at colons)."""
    run = (
        'source "$1"\n'
        'COMP_LINE=$2 COMP_POINT=${#2} COMP_WORDS=("${@:3}") COMP_CWORD=$(($# - 3))\n'
        '_gokku && printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", run, "bash", str(script), line, *words],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stderr == ""
    return done.stdout.split()


def test_builtins_and_flags(shell_env: dict[str, str], script: Path) -> None:
    cases = [
        (("gokku config:se", "gokku", "config", ":", "se"), ["set"]),
        # Where COMP_WORDBREAKS has no colon, the reply is the whole word.
        (("gokku config:se", "gokku", "config:se"), ["config:set"]),
        (("gokku vers", "gokku", "vers"), ["version"]),
        (("gokku --qu", "gokku", "--qu"), ["--quiet"]),
        (("gokku -a api config:u", "gokku", "-a", "api", "config", ":", "u"), ["unset"]),
        # Past the verb: nothing from gokku; bash's default (file) completion takes over.
        (("gokku config:set ", "gokku", "config", ":", "set", ""), []),
    ]
    for line, expected in cases:
        assert complete(shell_env, script, *line) == expected, line


def test_a_plugin_command_completes(
    shell_env: dict[str, str], script: Path, gokku: Gokku, tmp_path: Path
) -> None:
    scripts = {"commands/frobnicate": "echo frob\n"}
    tree = write_plugin(tmp_path / "src" / "widget", namespace="wd", commands=scripts)
    gokku.ok("plugins:add", str(tree))
    for namespace in ("widget", "wd"):
        line = f"gokku {namespace}:fro"
        assert complete(shell_env, script, line, "gokku", namespace, ":", "fro") == ["frobnicate"]
    assert "widget:frobnicate" in gokku.ok("completion", "--words").stdout.split()


def test_in_a_real_interactive_bash(shell_env: dict[str, str]) -> None:
    """TAB at a terminal: bash splits the line itself."""
    primary, secondary = pty.openpty()
    env = {**shell_env, "PS1": "$ ", "TERM": "dumb", "INPUTRC": "/dev/null"}
    bash = subprocess.Popen(
        ["bash", "--norc", "--noprofile", "-i"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        start_new_session=True,
    )
    os.close(secondary)
    try:
        os.write(primary, b'eval "$(gokku completion bash)"; echo lo""aded\n')
        assert b"loaded" in read_until(primary, b"loaded\r\n$ ")
        os.write(primary, b"gokku config:se\t")
        assert read_until(primary, b"config:set ").endswith(b"gokku config:set ")
    finally:
        bash.kill()
        bash.wait()
        os.close(primary)


def test_in_a_real_interactive_zsh(shell_env: dict[str, str], gokku: Gokku) -> None:
    """TAB in zsh (compinit loaded): a verb, then the app after it."""
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (ops/test installs it)")
    gokku.ok("apps:create", "api")
    primary, secondary = pty.openpty()
    env = {**shell_env, "PS1": "$ ", "TERM": "dumb"}
    zsh = subprocess.Popen(
        ["zsh", "-f", "-i"],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        start_new_session=True,
    )
    os.close(secondary)
    try:
        load = b'autoload -U compinit; compinit -u; eval "$(gokku completion zsh)"; echo lo""aded\n'
        os.write(primary, load)
        assert b"loaded" in read_until(primary, b"loaded\r\n")
        os.write(primary, b"gokku config:uns\t")
        assert read_until(primary, b"config:unset ").endswith(b"config:unset ")
        os.write(primary, b"\t")  # zsh redraws only what changed
        assert read_until(primary, b"api ").endswith(b"api ")
    finally:
        zsh.kill()
        zsh.wait()
        os.close(primary)


def read_until(fd: int, wanted: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while wanted not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            seen += os.read(fd, 4096)
    return seen


def test_over_the_client_it_is_the_servers_list(
    door: Door, tmp_path: Path, base_env: dict[str, str], gokku: Gokku
) -> None:
    station = workstation_for(door, tmp_path / "station", base_env)
    env = with_gokku_on_path(station.cli.env, tmp_path / "bin")
    script = save(station("completion", "bash").out, tmp_path)
    # The test plugin "t" is installed on the server only.
    line = ("gokku t:ar", "gokku", "t", ":", "ar")
    assert complete(env, script, *line, cwd=station.repo) == ["args"]
    # The server answers for the key: no admin or server-only verbs for a member.
    bob = make_key(tmp_path, "bob")
    gokku.ok("ssh-keys:add", "bob", str(bob.path) + ".pub")
    as_bob = {"GOKKU_SSH": env["GOKKU_SSH"].replace(str(door.key.path), str(bob.path))}
    admin = station("completion", "--words").stdout.split()
    member = station("completion", "--words", env=as_bob).stdout.split()
    assert "plugins:add" in admin and "serve" not in admin
    assert "plugins:add" not in member and "config:set" in member and "t:args" in member
    # A server out of reach: the built-in verbs still complete.
    unreachable = {**env, "GOKKU_REMOTE": "nowhere"}
    line = ("gokku config:se", "gokku", "config", ":", "se")
    assert complete(unreachable, script, *line, cwd=station.repo) == ["set"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give a shell (bash or zsh or fish) or --words"),
        (["bash", "--words"], "give a shell (bash or zsh or fish) or --words"),
        (["tcsh"], "no completion for 'tcsh': use bash or zsh or fish"),
        (["bash", "zsh"], "unexpected argument 'zsh'"),
    ],
)
def test_bad_arguments(gokku: Gokku, args: list[str], message: str) -> None:
    result = gokku("completion", *args)
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.startswith(" !     ") and message in result.stderr


def test_the_zsh_script_is_valid_zsh(gokku: Gokku, tmp_path: Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed: nothing to check the zsh script with")
    script = tmp_path / "_gokku"
    script.write_bytes(gokku.ok("completion", "zsh").out)
    assert "compdef _gokku gokku" in script.read_text() and "config:set" in script.read_text()
    checked = subprocess.run(["zsh", "-n", str(script)], capture_output=True, text=True)
    assert (checked.returncode, checked.stderr) == (0, "")


def test_names_the_key_may_see_after_the_verbs_that_take_them(
    door: Door, tmp_path: Path, base_env: dict[str, str], gokku: Gokku
) -> None:
    """Through the client, as a user's TAB runs it: apps after APP and -a, the plugin's
    own services after its commands' SERVICE, alternatives; a member only what it may
    read; nothing past what the usage says, where file completion takes over."""
    for app in ("api", "web"):
        gokku.ok("apps:create", app)
    kv = write_plugin(tmp_path / "src" / "kv", commands={"commands/args": "echo\n"})
    (kv / "plugin.yml").write_text("commands:\n  args: {usage: 'SERVICE [X]'}\n")
    gokku.ok("plugins:add", str(kv))
    for service in ("db", "cache"):
        gokku.ok("services:create", "kv", "--name", service)
    gokku.ok("services:create", "t", "--name", "elsewhere")
    station = workstation_for(door, tmp_path / "station", base_env)
    env = with_gokku_on_path(station.cli.env, tmp_path / "bin")
    script = save(station("completion", "bash").out, tmp_path)

    def tab(line: str, *words: str, environ: dict[str, str] = env) -> list[str]:
        return complete(environ, script, line, *words, cwd=station.repo)

    assert tab("gokku config:set ", "gokku", "config", ":", "set", "") == ["api", "web"]
    assert tab("gokku config:get w", "gokku", "config", ":", "get", "w") == ["web"]
    assert tab("gokku -a ", "gokku", "-a", "") == ["api", "web"]
    link = ("gokku services:link db -a ", "gokku", "services", ":", "link", "db", "-a", "")
    assert tab(*link) == ["api", "web"]
    assert tab("gokku kv:link ", "gokku", "kv", ":", "link", "") == ["cache", "db"]
    assert tab("gokku kv:link db ", "gokku", "kv", ":", "link", "db", "") == ["api", "web"]
    assert tab("gokku kv:args ", "gokku", "kv", ":", "args", "") == ["cache", "db"]
    assert tab("gokku services:info ", "gokku", "services", ":", "info", "") == [
        "cache",
        "db",
        "elsewhere",
    ]
    deploy_set = ("gokku apps:deploy-set api ", "gokku", "apps", ":", "deploy-set", "api", "")
    assert tab(*deploy_set) == ["branch", "wait"]
    # Past what the usage names, bash's default (file) completion: no reply from gokku.
    assert tab("gokku config:get api ", "gokku", "config", ":", "get", "api", "") == []
    # A member: only what it may read, and nothing after a verb it may not run.
    bob = make_key(tmp_path, "bob")
    gokku.ok("ssh-keys:add", "bob", str(bob.path) + ".pub")
    gokku.ok("access:grant", "bob", "app:web", "--read")
    gokku.ok("access:grant", "bob", "service:cache", "--read")
    as_bob = {**env, "GOKKU_SSH": env["GOKKU_SSH"].replace(str(door.key.path), str(bob.path))}
    assert tab("gokku config:set ", "gokku", "config", ":", "set", "", environ=as_bob) == ["web"]
    assert tab("gokku kv:args ", "gokku", "kv", ":", "args", "", environ=as_bob) == ["cache"]
    destroy = ("gokku apps:destroy ", "gokku", "apps", ":", "destroy", "")
    assert tab(*destroy, environ=as_bob) == [] and tab(*destroy) == ["api", "web"]


def fish_complete(env: dict[str, str], script: Path, line: str) -> list[str]:
    """What fish offers for ``line`` (``complete -C``), the script loaded."""
    done = subprocess.run(
        ["fish", "--no-config", "-c", 'source $argv[1]; complete -C "$argv[2]"', script, line],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.stderr == ""
    return [candidate.split("\t")[0] for candidate in done.stdout.splitlines()]


def test_the_fish_script_completes_verbs_flags_and_names(
    gokku: Gokku, shell_env: dict[str, str], tmp_path: Path
) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed (ops/test installs it)")
    script = tmp_path / "gokku.fish"
    script.write_bytes(gokku.ok("completion", "fish").out)
    gokku.ok("apps:create", "api")
    assert fish_complete(shell_env, script, "gokku config:se") == ["config:set"]
    assert fish_complete(shell_env, script, "gokku --qu") == ["--quiet"]
    assert fish_complete(shell_env, script, "gokku config:unset ") == ["api"]
    assert fish_complete(shell_env, script, "gokku --app ") == ["api"]
    # Past what the usage names: files.
    (tmp_path / "here.env").write_text("")
    listed = fish_complete(shell_env, script, f"gokku config:import api {tmp_path}/he")
    assert listed == [f"{tmp_path}/here.env"]
