"""The sandbox an app's own code runs in (``run_in_sandbox``), for real: bubblewrap with
user namespaces. A member pushes a build that tries to read the key registry, write into
a service, and change another app through the helpers, through both SSH doors; it gets
its checkout, its ``.env`` (read-only) and its variables, and nothing else. It dies with
the script that started it. Where no user namespace can be made, or Gokku runs as root
(whose files the sandbox would still own), it is refused, unless gokku.yml says ``sandbox:
off``, which ``serve`` and ``doctor`` then warn about. The tests that run it for real give
the state to ``nobody``, as ops/install gives it to a user of its own."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import REPO, Door, KeyPair, make_key, wait_until
from test_git import IDENTITY, commit
from test_trust_env import preload_library

BUILDER = """
set -e
run_in_sandbox "$1" -- /bin/bash ./build.sh
mkdir -p "$GOKKU_APP_DIR/release"
cp -P built linked "$GOKKU_APP_DIR/release/"
"""
# The app's build: what it may do, and three things it may not (each says how it went).
BUILD = """
root={root}
tried() {{ if "${{@:2}}" >/dev/null 2>&1; then echo "$1: done"; else echo "$1: refused"; fi; }}
tried keys cat "$root/ssh/keys.json"
tried services touch "$root/services/db/planted"
tried helpers bash -c "source $root/scripts/plugin-helpers.sh && set_app_env other shared K v"
tried env-file-write sh -c "echo K=v >> $root/apps/api/shared/.env"
echo "env file: $(cat "$root/apps/api/shared/.env" | tr '\\n' ' ')"
echo "greeting: $GREETING"
echo "privileges: $(grep -E '^(NoNewPrivs|CapEff)' /proc/self/status | tr -s '\\t\\n' '  ')"
echo "$GREETING" > built
ln -s "$root/ssh/keys.json" linked
"""
# A plugin command that runs the sandbox outside any deploy, from a directory outside
# GOKKU_ROOT (the other place it may write): it records its process group, and holds
# when asked.
RUNNER = """
mkdir -p "$GOKKU_ROOT/../outside"
cd "$GOKKU_ROOT/../outside"
ps -o pgid= $$ | tr -d ' ' > "$GOKKU_ROOT/../group"
run_in_sandbox "$1" -- /bin/sh -c "$2" "$PWD"
"""

# run_in_sandbox with the arguments given, from outside GOKKU_ROOT.
DIRECT = """
cd "$GOKKU_ROOT/.."
run_in_sandbox "$@"
"""


def _untouched(gokku: Gokku) -> dict[str, bytes]:
    return {
        k: v
        for k, v in gokku.snapshot().items()
        if not k.startswith(("log/", "apps/api/", "repos/api.git/"))
    }


def _builder(gokku: Gokku, keydir: Path) -> KeyPair:
    """The builder plugin, apps api and other, service db, and bob, a member who may
    write api: his key."""
    tree = write_plugin(gokku.root.parent / "src" / "builder", commands={"hooks/deploy": BUILDER})
    gokku.ok("plugins:add", str(tree), "--name", "builder")
    for app in ("api", "other"):
        gokku.ok("apps:create", app)
    gokku.ok("services:create", "t", "--name", "db")
    bob = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
    gokku.ok("access:grant", "bob", "app:api")
    return bob


def _push(door: Door, key: Path, tmp_path: Path, build: str) -> subprocess.CompletedProcess:
    """``git push`` of a commit whose build.sh is ``build``, to api, with ``key``."""
    work = tmp_path / "home" / "work"
    work.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    commit(work, "build.sh", build.encode())
    ssh = shlex.join(door.ssh_argv(key=key)[:-1])
    env = {**os.environ, **IDENTITY, "HOME": str(work.parent), "GIT_SSH_COMMAND": ssh}
    return subprocess.run(
        ["git", "push", f"{door.user}@127.0.0.1:api", "main"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )


@pytest.mark.parametrize("state_owner", ["nobody"])
def test_a_pushed_build_reaches_only_its_checkout_env_file_and_variables(
    door: Door, gokku: Gokku, keydir: Path, tmp_path: Path
) -> None:
    bob = _builder(gokku, keydir)
    # A library of the app's own, named in full: loaded by whatever starts with the app's
    # variables outside the sandbox (inside, its path does not exist).
    evil = preload_library(gokku.root.parent / "evil.so", gokku.root.parent / "preloaded")
    setting = shlex.quote(f"LD_PRELOAD={evil}")
    assert door.ssh(f"config:set api 'GREETING=hello sandbox' {setting}", key=bob.path).code == 0
    before, env_file = _untouched(gokku), gokku.root / "apps" / "api" / "shared" / ".env"
    env_before = env_file.read_bytes()

    build = BUILD.format(root=shlex.quote(str(gokku.root.resolve())))
    pushed = _push(door, bob.path, tmp_path, build)
    assert pushed.returncode == 0, pushed.stderr
    said = [line.removeprefix("remote: ").rstrip() for line in pushed.stderr.splitlines()]
    for attempt in ("keys", "services", "helpers", "env-file-write"):
        assert f"{attempt}: refused" in said, pushed.stderr
    assert f"env file: GREETING='hello sandbox' LD_PRELOAD={evil}" in said
    assert "greeting: hello sandbox" in said
    assert "privileges: CapEff: 0000000000000000 NoNewPrivs: 1" in said
    # What it wrote in its checkout came out; nothing else changed. Its link to the key
    # registry came out as a link (cp -P): the trigger, unsandboxed, never followed it.
    release = gokku.root / "apps" / "api" / "release"
    assert (release / "built").read_text() == "hello sandbox\n"
    assert (release / "linked").is_symlink()
    assert _untouched(gokku) == before and env_file.read_bytes() == env_before
    assert not (gokku.root.parent / "preloaded").exists()


# What a build as root could read through the read-only /etc: root's own 0600 files.
READ_AS_ROOT = """
echo "shadow: $(head -c 5 /etc/shadow)"
echo "done" > built
"""


def test_as_root_a_pushed_build_is_refused_in_one_line(
    door: Door, gokku: Gokku, keydir: Path, tmp_path: Path
) -> None:
    """The tests' own state is root's: the sandbox would run the build as uid 0, owning
    /etc/shadow and the host keys, so it refuses; doctor says why."""
    bob = _builder(gokku, keydir)
    before = _untouched(gokku)
    pushed = _push(door, bob.path, tmp_path, READ_AS_ROOT)
    assert pushed.returncode != 0
    said = [line.removeprefix("remote: ") for line in pushed.stderr.splitlines()]
    refused = [line for line in said if "no sandbox for apps' code" in line]
    assert len(refused) == 1, pushed.stderr
    assert "this Gokku runs as root" in refused[0] and "sandbox: off" in refused[0]
    assert "shadow:" not in pushed.stderr
    assert not (gokku.root / "apps" / "api" / "release").exists()
    assert _untouched(gokku) == before
    # A key that may not write api is refused before any trigger runs.
    carol = make_key(keydir, "carol")
    gokku.ok("ssh-keys:add", "carol", input=carol.public.encode())
    shutil.rmtree(tmp_path / "home")
    stranger = _push(door, carol.path, tmp_path, READ_AS_ROOT)
    assert stranger.returncode != 0 and "carol may not write app 'api'" in stranger.stderr
    assert "no sandbox" not in stranger.stderr

    warning = "this Gokku runs as root, whose files a sandbox would still own"
    assert warning in gokku.ok("doctor").stderr
    with open(gokku.root / "gokku.yml", "a") as settings:
        settings.write("sandbox: off\n")
    doctor = gokku.ok("doctor").stderr
    assert warning not in doctor and "sandbox: off in gokku.yml" in doctor


@pytest.fixture
def runner(gokku: Gokku) -> Path:
    tree = write_plugin(gokku.root.parent / "src" / "sb", commands={"commands/run": RUNNER})
    gokku.ok("plugins:add", str(tree), "--name", "sb")
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "api", "GREETING=hi")
    return gokku.root.parent / "outside"


@pytest.mark.parametrize("state_owner", ["nobody"])
def test_the_sandbox_dies_with_the_script_that_started_it(gokku: Gokku, runner: Path) -> None:
    hold = "echo $GREETING > held; while :; do sleep 0.05; done"
    proc = subprocess.Popen(
        [gokku.python, "-m", "gokku", "sb:run", "api", hold],
        env=gokku.env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert wait_until(lambda: (runner / "held").exists(), 30)
        assert (runner / "held").read_text() == "hi\n"  # its variables, in its directory
        assert _sandboxed(runner), "no sandboxed process found"
        os.killpg(int((gokku.root.parent / "group").read_text()), signal.SIGKILL)
        assert wait_until(lambda: not _sandboxed(runner), 10), "the sandbox outlived its script"
    finally:
        proc.kill()
        proc.wait()
        for pid in _sandboxed(runner):  # what a failure left: not the next test's business
            os.kill(pid, signal.SIGKILL)


def _sandboxed(where: Path) -> list[int]:
    """The processes of the sandbox started in ``where`` (bwrap's, and the command's)."""
    found = subprocess.run(["pgrep", "-f", str(where)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def _without_user_namespaces(gokku: Gokku) -> Gokku:
    """The CLI run where no user namespace can be made: in one of its own (mapped to
    root, who still owns the state) whose limit on new ones is 0."""
    script = 'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"'
    return Gokku(gokku.root, gokku.env, ["unshare", "-U", "-r", "sh", "-c", script, "sh"])


def test_without_user_namespaces_the_sandbox_is_refused_unless_turned_off(
    gokku: Gokku, runner: Path
) -> None:
    confined = _without_user_namespaces(gokku)
    before = gokku.snapshot()
    refused = confined("sb:run", "api", "touch ran")
    assert refused.code == 1
    lines = refused.stderr.splitlines()
    assert len(lines) == 1 and "no sandbox for apps' code on this host" in lines[0], lines
    assert "sandbox: off" in lines[0]
    assert not (runner / "ran").exists() and gokku.snapshot() == before

    (gokku.root / "gokku.yml").write_text("sandbox: off\n")
    ran = confined("sb:run", "api", 'echo "$GREETING" > ran')
    assert ran.code == 0, ran.stderr
    assert (runner / "ran").read_text() == "hi\n"  # unsandboxed, with the same variables


def test_sandbox_off_is_said_by_doctor_and_serve(gokku: Gokku, tmp_path: Path) -> None:
    warning = "sandbox: off in gokku.yml: plugins run apps' code"
    healthy = gokku.ok("doctor")
    assert warning not in healthy.stderr
    (gokku.root / "gokku.yml").write_text("sandbox: off\n")
    doctor = gokku.ok("doctor")  # a warning, not a finding: nothing to repair
    assert warning in doctor.stderr and doctor.stdout == "ok: nothing to report\n"

    log = tmp_path / "serve.err"
    with open(log, "wb") as err:
        serve = subprocess.Popen(
            [sys.executable, "-P", "-m", "gokku", "serve", "--port", "0"],
            env=gokku.env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        assert wait_until(lambda: warning in log.read_text(), 30), log.read_text()
    finally:
        serve.terminate()
        serve.wait(30)

    (gokku.root / "gokku.yml").write_text("sandbox: maybe\n")
    bad = gokku("doctor")
    assert bad.code == 1 and "sandbox must be on or off, not 'maybe'" in bad.stderr


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["api"], 2, "usage: run_in_sandbox APP [--] COMMAND"),
        (["../api", "--", "/bin/true"], 2, "invalid app name"),
        (["nope", "--", "/bin/true"], 1, "app 'nope' does not exist"),
    ],
)
def test_bad_calls_of_run_in_sandbox_are_one_line(
    gokku: Gokku, runner: Path, args: list[str], code: int, said: str
) -> None:
    direct = write_plugin(runner.parent / "src" / "direct", commands={"commands/run": DIRECT})
    gokku.ok("plugins:add", str(direct), "--name", "direct")
    refused = gokku("direct:run", *args)
    assert refused.code == code and refused.stderr.count("\n") == 1, refused.stderr
    assert said in refused.stderr


def test_the_sandbox_refuses_a_directory_inside_the_state(gokku: Gokku, tmp_path: Path) -> None:
    inside = textwrap.dedent(
        """
        cd "$GOKKU_ROOT/apps/api"
        run_in_sandbox api -- /bin/true
        """
    )
    tree = write_plugin(tmp_path / "src" / "in", commands={"commands/run": inside})
    gokku.ok("plugins:add", str(tree), "--name", "in")
    gokku.ok("apps:create", "api")
    refused = gokku("in:run")
    assert refused.code == 1 and refused.stderr.count("\n") == 1
    assert "run_in_sandbox runs in a deploy's checkout of api" in refused.stderr
