"""What surprised a Dokku user following the README, each through the workstation's
client (a HOME without Gokku state) against a real server, through both doors: a link
under a new alias, a builder-only plugin, plugins:update of a server path, the first
push's message, and the bundled plugins' ``logs -t``."""

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door
from test_client import Workstation, state, workstation_for
from test_git import IDENTITY


@pytest.fixture
def workstation(door: Door, tmp_path: Path, base_env: dict[str, str]) -> Workstation:
    return workstation_for(door, tmp_path / "workstation", base_env)


def test_linking_again_under_another_alias_is_refused_and_says_how(
    workstation: Workstation, gokku: Gokku, tmp_path: Path
) -> None:
    install = 'set_service_env "$1" REDIS_URL "redis://$1"\n'
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "cache", install=install)))
    gokku.ok("apps:create", "api")
    gokku.ok("services:create", "cache", "--name", "c")
    linked = workstation("cache:link", "c", "--alias", "SESSIONS")
    assert linked.code == 0, linked.stderr
    before = state(gokku)
    for argv, as_ in [
        (["services:link", "c", "--alias", "SESS2"], "SESS2"),
        (["cache:link", "c"], "its primary service"),
    ]:
        again = workstation(*argv)
        assert (again.code, again.stderr) == (
            1,
            f" !     c is linked to api as SESSIONS; unlink it first to link it as {as_} "
            "(gokku services:unlink c -a api)\n",
        )
        assert state(gokku) == before
    assert workstation("services:link", "c", "--alias", "SESSIONS").code == 0  # the same: ok
    assert gokku.ok("config:get", "api", "SESSIONS_URL").stdout == "redis://c\n"
    assert workstation("services:unlink", "c").code == 0
    assert workstation("services:link", "c", "--alias", "SESS2").code == 0  # moved
    assert gokku.ok("config:list", "api").stdout == "SESS2_URL=redis://c\n"


def push(workstation: Workstation) -> subprocess.CompletedProcess:
    """A commit on main, pushed to the remote ``gokku`` with the workstation's ssh."""
    env = {**workstation.cli.env, **IDENTITY, "GIT_SSH_COMMAND": workstation.cli.env["GOKKU_SSH"]}
    repo = workstation.repo
    (repo / "app.py").write_text("print('hello')\n")
    for args in (["add", "app.py"], ["commit", "-q", "-m", "first"], ["branch", "-M", "main"]):
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)
    return subprocess.run(
        ["git", "push", "gokku", "main"], cwd=repo, env=env, capture_output=True, text=True
    )


def test_a_builder_is_only_hooks_and_the_first_push_says_it_made_the_app(
    workstation: Workstation, gokku: Gokku, tmp_path: Path
) -> None:
    """A plugin with only hooks/deploy installs and validates; the first push's message
    comes through git (``remote:``) like the build's own lines."""
    builder = tmp_path / "builder"
    (builder / "hooks").mkdir(parents=True)
    (builder / "hooks" / "deploy").write_text('echo "-----> built $1 ${2:0:7}"\n')
    gokku.ok("plugins:add", str(builder))
    checked = workstation("plugins:validate", "builder")
    assert (checked.code, checked.stdout) == (0, "ok: builder follows the plugin contract\n")

    pushed = push(workstation)
    assert pushed.returncode == 0, pushed.stderr
    lines = [line.rstrip() for line in pushed.stderr.splitlines()]  # git pads them
    assert "remote: -----> Created app api" in lines, pushed.stderr
    built = [line for line in lines if "built api" in line]
    assert len(built) == 1 and built[0].startswith("remote: -----> built api "), pushed.stderr
    assert not any(line.startswith("-----> Created") for line in lines)

    # With an install, it is a service plugin: the service commands are required again.
    (builder / "install").write_text("true\n")
    refused = gokku("plugins:add", str(builder), "--name", "half")
    assert refused.code != 0 and "missing commands/info" in refused.stderr, refused.stderr


def test_plugins_update_of_a_server_path_is_refused_over_ssh(
    workstation: Workstation, gokku: Gokku, test_plugin: str
) -> None:
    """The test plugin came from a directory on the server: over SSH, updating it would
    have the server read its own files for the caller, as plugins:add PATH would."""
    source = gokku.root.parent / "src" / "t"
    before = state(gokku)
    refused = workstation("plugins:update", test_plugin)
    assert (refused.code, refused.stderr) == (
        1,
        f" !     plugin 't' comes from {source} on the server, which it reads for no SSH "
        "caller: run plugins:update t on the server itself\n",
    )
    assert state(gokku) == before
    assert "updated" in gokku.ok("plugins:update", test_plugin).stderr  # on the server: yes


def test_logs_t_follows_as_dokkus_and_the_bundled_help_says_so(
    workstation: Workstation, gokku: Gokku, tmp_path: Path
) -> None:
    """``-t``/``--tail [N]`` follow (Dokku's meaning), ``-n N`` prints and stops: the
    helper both bundled plugins' logs run (show_logs), driven through a plugin's logs."""
    log = tmp_path / "server.log"
    log.write_text("".join(f"line {n}\n" for n in range(1, 6)))
    logs = f'show_logs {log} "${{@:2}}"\n'
    tree = write_plugin(tmp_path / "srv", commands={"commands/logs": logs})
    gokku.ok("plugins:add", str(tree))
    gokku.ok("plugins:add", "postgres")
    gokku.ok("plugins:add", "redis")
    gokku.ok("apps:create", "api")

    assert workstation("srv:logs", "c", "-n", "2").stdout == "line 4\nline 5\n"
    for follow in (["-t"], ["--tail", "1"], ["--tail=1"]):
        client = subprocess.Popen(
            [sys.executable, "-m", "gokku", "srv:logs", "c", *follow],
            cwd=workstation.repo,
            env=workstation.cli.env,
            stdout=subprocess.PIPE,
            text=True,
        )
        lines = log.read_text().splitlines(keepends=True)
        first = lines if follow == ["-t"] else lines[-1:]  # the last 100, or the last 1
        try:
            assert [client.stdout.readline() for _ in first] == first
            with log.open("a") as appended:  # written while it follows: it shows
                appended.write(f"after {follow}\n")
            assert client.stdout.readline() == f"after {follow}\n"
        finally:
            client.terminate()
            client.wait(timeout=30)
    for plugin in ("postgres", "redis"):
        shown = workstation("help", plugin).stdout
        line = next(line for line in shown.splitlines() if f"{plugin}:logs" in line)
        assert "-t" in line and "follows" in line, shown
