"""A member's access is decided on the app and service as they are when its command
starts, and holds for them only: a command still running when an admin destroys the name
and makes it again acts on nothing of the new one, through either door, and says so.

The member's command is held where the test wants it: a plugin command that waits for a
file the test creates, or a built-in waiting on the app's lock, which the test holds."""

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, make_key, wait_until
from test_git import IDENTITY, commit, remote

from gokku.paths import Root
from gokku.storage import HELD_LOCKS_VAR, lock

# The one line the member gets.
REFUSAL = (
    " !     {kind} '{name}' was destroyed and made again since this command was allowed on"
    " it: nothing done\n"
)


@pytest.fixture
def bob(gokku: Gokku, keydir: Path) -> KeyPair:
    key = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=key.public.encode())
    return key


@pytest.fixture
def held(gokku: Gokku, bob: KeyPair, tmp_path: Path) -> Path:
    """Plugin ``hold``: ``hold:wait SVC app|service`` says it started, waits for the
    file ``release``, then writes through the helpers into the app (``-a``) or the
    service it was allowed on. bob may write app api and service hsvc. Returns the
    directory of the two files."""
    flags = tmp_path / "flags"
    flags.mkdir()
    wait = (
        "set -e\n"
        f"touch {flags}/started\n"
        f"while [ ! -e {flags}/release ]; do sleep 0.05; done\n"
        'if [ "$2" = app ]; then set_app_env "$GOKKU_APP" shared STOLEN 1\n'
        'else update_service_config "$1" stolen 1; fi\n'
        "echo done\n"
    )
    tree = write_plugin(tmp_path / "src" / "hold", commands={"commands/wait": wait})
    gokku.ok("plugins:add", str(tree))
    gokku.ok("apps:create", "api")
    gokku.ok("services:create", "hold", "--name", "hsvc")
    gokku.ok("access:grant", "bob", "app:api")
    gokku.ok("access:grant", "bob", "service:hsvc")
    return flags


REBIRTH = {
    "app": [("apps:destroy", "api", "--force"), ("apps:create", "api")],
    "service": [
        ("services:destroy", "hsvc", "--force"),
        ("services:create", "hold", "--name", "hsvc"),
    ],
}


@pytest.mark.parametrize("kind", ["app", "service"])
def test_a_running_command_acts_on_nothing_of_a_name_made_again(
    door: Door, gokku: Gokku, bob: KeyPair, held: Path, kind: str
) -> None:
    member = subprocess.Popen(
        door.ssh_argv(key=bob.path) + ["--", f"-a api hold:wait hsvc {kind}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert wait_until(lambda: (held / "started").exists() or member.poll() is not None, 60)
    assert member.poll() is None, member.communicate()
    for args in REBIRTH[kind]:
        gokku.ok(*args)
    (held / "release").touch()
    out, err = member.communicate(timeout=60)
    name = "api" if kind == "app" else "hsvc"
    assert member.returncode != 0 and b"done" not in out
    assert err.decode() == REFUSAL.format(kind=kind, name=name)  # the helper's, nothing else
    # The new app and service are as the admin made them.
    assert "STOLEN" not in gokku.ok("config:list", "-a", "api").stdout
    assert "stolen" not in gokku.ok("services:info", "hsvc", "--format", "json").stdout


def test_the_same_command_acts_when_the_name_was_left_alone(
    door: Door, gokku: Gokku, bob: KeyPair, held: Path
) -> None:
    """The check refuses a name made again, not a command that waited."""
    (held / "release").touch()
    done = door.ssh("-a api hold:wait hsvc app", key=bob.path)
    assert done.code == 0 and done.stdout.endswith("done\n"), done
    assert "STOLEN" in gokku.ok("config:list", "-a", "api").stdout


def _member_command(door: Door, bob: KeyPair, what: str, tmp_path: Path) -> subprocess.Popen:
    """bob's ``config:set`` of api, or ``git push`` to it, started in the background."""
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    ssh = door.ssh_argv(key=bob.path)
    if what == "config:set":
        return subprocess.Popen([*ssh, "--", "config:set -a api S=1"], **pipes)
    work = tmp_path / "home" / "work"
    work.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    commit(work, "app.txt", b"stolen\n")
    env = {**os.environ, **IDENTITY, "HOME": str(work.parent)}
    env["GIT_SSH_COMMAND"] = shlex.join(ssh[:-1])
    push = ["git", "push", remote(door, "api"), "main"]
    return subprocess.Popen(push, cwd=work, env=env, **pipes)


@pytest.mark.parametrize("what", ["config:set", "git push"])
def test_a_builtin_waiting_on_the_lock_writes_nothing_into_the_new_app(
    door: Door, gokku: Gokku, bob: KeyPair, tmp_path: Path, what: str
) -> None:
    """``config:set`` or ``git push``, decided on api, then waiting for its lock while the
    lock's holder destroyed api and made it again."""
    gokku.ok("apps:create", "api")
    gokku.ok("access:grant", "bob", "app:api")
    with lock(Root(gokku.root).locks, "app-api", "an admin's destroy, slowed down"):
        member = _member_command(door, bob, what, tmp_path)
        lock_file = Root(gokku.root).locks / "app-api.lock"
        assert wait_until(lambda: member.poll() is not None or _opened_elsewhere(lock_file), 60)
        assert member.poll() is None, member.communicate()
        for args in REBIRTH["app"]:
            gokku.ok(*args, env={HELD_LOCKS_VAR: "app-api"})
    _, err = member.communicate(timeout=60)
    assert member.returncode != 0
    refusal = REFUSAL.format(kind="app", name="api")
    assert refusal in err.decode(), err
    assert gokku.ok("config:list", "-a", "api", "--format", "json").stdout == "{}\n"
    assert not (gokku.root / "repos" / "api.git").exists()
    assert door.audit()[-1]["denied"] == refusal[7:-1]


def _opened_elsewhere(path: Path) -> bool:
    """Whether a process other than this one has ``path`` open (the member's command,
    waiting on the lock)."""
    for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == str(path):
                    return True
            except OSError:
                continue
    return False
