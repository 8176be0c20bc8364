"""``git push`` deploys, with the real git client through both SSH doors and a real plugin
whose triggers build something observable: the revision, a file from the pushed source
and a variable of the app's .env (which only its sandbox sees), written into the app's
directory. What the source holds steers the build: ``FAIL`` makes it fail, ``HOLD`` makes
it wait for a release file (ignoring HUP and TERM, as a stubborn build would), ``SLOW``
makes it take a while.
"""

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, group_alive, make_key, processes_under, wait_until
from test_git import IDENTITY, commit, git, remote, rev

HOOKS = {
    "hooks/pre-receive": """
        echo "pre-receive $*" >> "$GOKKU_ROOT/../triggers.log"
        if [ "$4" = refs/heads/forbidden ]; then echo "forbidden is not for pushing"; exit 4; fi
    """,
    "hooks/deploy": """
        set -e
        log="$GOKKU_ROOT/../triggers.log"
        echo "deploy $1 $2 start $(date +%s.%N) key=$GOKKU_KEY_NAME src=$GOKKU_SOURCE_DIR" >> "$log"
        echo "building $2 in $(pwd)"
        if [ -f HOLD ]; then
          trap '' HUP TERM
          ps -o pgid= $$ | tr -d ' ' > "$GOKKU_ROOT/../held-$1"
          while [ ! -f "$GOKKU_ROOT/../release-$1" ]; do sleep 0.05; done
        fi
        if [ -f SLOW ]; then sleep 0.3; fi
        if [ -f FAIL ]; then echo "build broke: $(cat FAIL)"; exit 3; fi
        mkdir -p "$GOKKU_APP_DIR/release"
        cp -P app.txt "$GOKKU_APP_DIR/release/app.txt"
        [ -z "${GREETING+set}" ] || { echo "the trigger got the app's GREETING"; exit 5; }
        run_in_sandbox "$1" -- /bin/sh -c 'printf "%s\\n" "$GREETING"' \\
          > "$GOKKU_APP_DIR/release/greeting"
        grep -q '^GREETING=' "$GOKKU_APP_ENV_FILE" && echo "env file read"
        echo "$2" > "$GOKKU_APP_DIR/release/REVISION"
        echo "deploy $1 $2 end $(date +%s.%N)" >> "$log"
    """,
    "hooks/post-deploy": """
        echo "post-deploy $*" >> "$GOKKU_ROOT/../triggers.log"
        echo "restarted $1"
    """,
}


@pytest.fixture
def state_owner() -> str:
    """The state is a user's of its own, as ops/install sets up: the sandbox the build
    runs in refuses root."""
    return "nobody"


@pytest.fixture
def builder(gokku: Gokku) -> str:
    tree = write_plugin(gokku.root.parent / "src" / "builder", commands=HOOKS)
    gokku.ok("plugins:add", str(tree), "--name", "builder")
    return "builder"


@pytest.fixture
def work(tmp_path: Path) -> Path:
    path = tmp_path / "home" / "work"
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    commit(path, "app.txt", b"version 1\n")
    return path


@pytest.fixture
def api(gokku: Gokku, builder: str) -> str:
    gokku.ok("apps:create", "api")
    # The sandboxed build reads GREETING; a PATH of the app's must not take the trigger's
    # tools away (its sandbox has it: /bin/sh is named in full).
    gokku.ok("config:set", "api", "GREETING=hello 'world'", "PATH=/nowhere")
    return "api"


def build(gokku: Gokku, app: str = "api") -> dict[str, str]:
    release = gokku.root / "apps" / app / "release"
    if not release.is_dir():
        return {}
    return {p.name: p.read_text() for p in release.iterdir()}


def branch(gokku: Gokku, app: str = "api", name: str = "main") -> str:
    """What the branch points at in the app's repository; "" when it does not exist."""
    repo = gokku.root / "repos" / f"{app}.git"
    found = subprocess.run(  # the repository is the state owner's, not ours
        ["git", "-c", "safe.directory=*", "rev-parse", "--verify", "--quiet", f"refs/heads/{name}"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    return found.stdout.strip()


def triggers(gokku: Gokku) -> list[str]:
    path = gokku.root.parent / "triggers.log"
    return path.read_text().splitlines() if path.exists() else []


def deploys(door: Door, app: str = "api") -> list[list[str]]:
    listed = door.ssh(f"--quiet apps:deploys {app}")
    assert listed.code == 0, listed.stderr
    return [line.split() for line in listed.stdout.splitlines()]


def without_audit(gokku: Gokku) -> dict[str, bytes]:
    return {k: v for k, v in gokku.snapshot().items() if k != "log/audit.log"}


def test_a_push_deploys_and_a_failed_deploy_rejects_it(door: Door, gokku, api, work) -> None:
    first = rev(work, "HEAD")
    pushed = git(door, "push", remote(door, "api"), "main", cwd=work)
    assert pushed.code == 0, pushed.stderr
    assert f"remote: building {first} in " in pushed.stderr  # live, as git's remote: lines
    assert "remote: env file read" in pushed.stderr
    assert "remote: restarted api" in pushed.stderr
    assert build(gokku) == {
        "REVISION": first + "\n",
        "app.txt": "version 1\n",
        "greeting": "hello 'world'\n",
    }
    assert branch(gokku) == first
    lines = triggers(gokku)
    assert lines[0] == f"pre-receive api {'0' * 40} {first} refs/heads/main"
    assert lines[1].startswith(f"deploy api {first} start") and "key=alice" in lines[1]
    assert lines[-1] == f"post-deploy api {first}"
    source = lines[1].split("src=")[1]
    assert not Path(source).exists()  # the checkout is gone
    assert list((gokku.root / "apps" / "api" / ".deploys").glob("checkout-*")) == []

    commit(work, "app.txt", b"version 2\n")
    broken = commit(work, "FAIL", b"missing semicolon\n")
    failed = git(door, "push", remote(door, "api"), "main", cwd=work)
    assert failed.code != 0
    assert "! [remote rejected] main -> main (pre-receive hook declined)" in failed.stderr
    assert "remote: build broke: missing semicolon" in failed.stderr
    assert f"deploy of {broken[:12]} to api failed: builder deploy exited 3" in failed.stderr
    assert branch(gokku) == first  # refs unchanged
    assert build(gokku)["REVISION"] == first + "\n"  # the previous build still in place
    assert triggers(gokku)[-1] != f"post-deploy api {broken}"

    listed = deploys(door)
    assert [row[:4] for row in listed] == [
        ["1", first[:12], "main", "alice"],
        ["2", broken[:12], "main", "alice"],
    ]
    assert listed[0][6] == "succeeded" and listed[1][6] == "failed:"
    last = door.ssh("apps:deploy-log api")
    assert last.code == 0 and "build broke: missing semicolon" in last.stdout
    assert "-----> builder: deploy" in last.stdout
    older = door.ssh("apps:deploy-log api 1")
    assert f"building {first}" in older.stdout and "restarted api" in older.stdout

    # Other branches are stored and say so; the deploy branch cannot be deleted; a
    # pre-receive trigger refuses what it wants to.
    subprocess.run(["git", "-C", str(work), "branch", "feature", first], check=True)
    stored = git(door, "push", remote(door, "api"), "feature", cwd=work)
    assert stored.code == 0, stored.stderr
    assert "refs/heads/feature stored, not deployed (api deploys main)" in stored.stderr
    assert branch(gokku, name="feature") == first and len(deploys(door)) == 2
    deleted = git(door, "push", remote(door, "api"), ":main", cwd=work)
    assert deleted.code != 0 and "main is the branch api deploys" in deleted.stderr
    refused = git(door, "push", remote(door, "api"), "feature:forbidden", cwd=work)
    assert refused.code != 0 and "remote: forbidden is not for pushing" in refused.stderr
    assert "push to api refused: builder pre-receive exited 4" in refused.stderr
    assert branch(gokku) == first and not branch(gokku, name="forbidden")


def test_redeploy_rollback_and_bad_input(door: Door, gokku, api, work) -> None:
    first = rev(work, "HEAD")
    assert git(door, "push", remote(door, "api"), "main", cwd=work).code == 0
    second = commit(work, "app.txt", b"version 2\n")
    assert git(door, "push", remote(door, "api"), "main", cwd=work).code == 0
    again = git(door, "push", remote(door, "api"), "main", cwd=work)
    assert again.code == 0 and "Everything up-to-date" in again.stderr
    assert len(deploys(door)) == 2  # git sends nothing: apps:deploy is for that

    redeployed = door.ssh("apps:deploy api")
    assert redeployed.code == 0, redeployed.stderr
    assert f"building {second}" in redeployed.stderr and "restarted api" in redeployed.stderr
    assert [row[1] for row in deploys(door)] == [first[:12], second[:12], second[:12]]
    assert triggers(gokku)[-1] == f"post-deploy api {second}"

    rolled = door.ssh(f"apps:deploy api {first[:10]}")
    assert rolled.code == 0, rolled.stderr
    assert build(gokku)["REVISION"] == first + "\n" and branch(gokku) == first
    assert f"main of api now points at {first[:12]}" in rolled.stderr

    # The deploy branch is the app's to choose.
    assert door.ssh("apps:deploy-set api branch prod").code == 0
    assert door.ssh("apps:deploy").code == 2
    stored = git(door, "push", remote(door, "api"), "main", cwd=work)
    assert "refs/heads/main stored, not deployed (api deploys prod)" in stored.stderr
    assert build(gokku)["REVISION"] == first + "\n"
    assert git(door, "push", remote(door, "api"), "main:prod", cwd=work).code == 0
    assert build(gokku)["REVISION"] == second + "\n"

    before = without_audit(gokku)
    for command, code, message in [
        ("apps:deploy nope", 1, "app 'nope' does not exist"),
        ("apps:deploy Api", 2, "invalid app name 'Api'"),
        ("apps:deploy ../api", 2, "invalid app name '../api'"),
        ("apps:deploy api deadbeef", 1, "no commit 'deadbeef' in the repository of app 'api'"),
        ("apps:deploy api -- --all", 1, "no commit '--all'"),
        (f"apps:deploy api {first}^{{tree}}", 1, "no commit"),
        ("apps:deploy api main extra", 2, "unexpected argument 'extra'"),
        ("apps:deploy-log api 99", 1, "deploy 99 of 'api' is not kept (kept: 1 to 5)"),
        ("apps:deploy-log api x", 2, "N must be a deploy's number"),
        ("apps:deploy-set api branch -- -x", 2, "invalid branch name '-x'"),
        ("apps:deploy-set api branch a..b", 2, "invalid branch name 'a..b'"),
        ("apps:deploy-set api wait soon", 2, "wait must be a number of seconds"),
        ("apps:deploy-set api colour red", 2, "unknown setting 'colour'"),
    ]:
        result = door.ssh(command)
        assert result.code == code, (command, result.stderr)
        (line,) = result.stderr.splitlines()
        assert line.startswith(" !     ") and message in line, (command, line)
    assert without_audit(gokku) == before


def test_concurrent_pushes_to_one_app_are_serialised(door: Door, gokku, api, work) -> None:
    base = rev(work, "HEAD")
    assert git(door, "push", remote(door, "api"), "main", cwd=work).code == 0
    heads = {}
    for i in range(4):
        subprocess.run(["git", "-C", str(work), "checkout", "-q", "-b", f"b{i}", base], check=True)
        commit(work, "SLOW", b"")
        heads[i] = commit(work, "FAIL" if i == 2 else "app.txt", f"{i}\n".encode())
    pushes = [
        subprocess.Popen(
            ["git", "push", "--force", remote(door, "api"), f"b{i}:main"],
            cwd=work,
            env=_git_env(door, work),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    codes = [push.wait(120) for push in pushes]
    assert [code == 0 for code in codes] == [True, True, False, True]
    # One deploy at a time: no two builds overlap.
    spans = {}
    for line in triggers(gokku):
        words = line.split()
        if words[0] == "deploy":
            spans.setdefault(words[2], []).append(float(words[4]))
    intervals = sorted(tuple(span) for span in spans.values() if len(span) == 2)
    assert len(intervals) == 4  # the first push and the three that built
    assert all(a[1] <= b[0] for a, b in zip(intervals, intervals[1:], strict=False))
    # The last build is what the branch points at.
    assert build(gokku)["REVISION"] == branch(gokku) + "\n"
    assert branch(gokku) in (heads[0], heads[1], heads[3])
    results = [row[6] for row in deploys(door)]
    assert results.count("succeeded") == 4 and len(results) == 5


def _git_env(door: Door, work: Path) -> dict[str, str]:
    import shlex

    ssh = shlex.join(door.ssh_argv()[:-1])
    return {**os.environ, **IDENTITY, "HOME": str(work.parent), "GIT_SSH_COMMAND": ssh}


def _start_push(door: Door, work: Path, app: str, refspec: str = "main") -> subprocess.Popen:
    return subprocess.Popen(
        ["git", "push", remote(door, app), refspec],
        cwd=work,
        env=_git_env(door, work),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def test_a_held_deploy_blocks_its_app_only(door: Door, gokku, api, work) -> None:
    """While api builds, web deploys (parallel), and a second push to api waits, saying
    for whom, then gives up at the app's limit with refs and build unchanged."""
    gokku.ok("apps:create", "web")
    assert door.ssh("apps:deploy-set api wait 1").code == 0
    before = rev(work, "HEAD")
    held = commit(work, "HOLD", b"")
    first = _start_push(door, work, "api")
    assert wait_until(lambda: (gokku.root.parent / "held-api").exists(), 30)

    web = git(door, "push", remote(door, "web"), f"{before}:refs/heads/main", cwd=work)
    assert web.code == 0, web.stderr
    assert build(gokku, "web")["REVISION"] == before + "\n"

    started = time.monotonic()
    second = git(door, "push", remote(door, "api"), "main:other", cwd=work)
    assert second.code != 0
    assert time.monotonic() - started < 20
    assert "api is busy (pid " in second.stderr and "git push by alice since" in second.stderr
    assert "waiting up to 1 s" in second.stderr
    assert " !     app-api is locked by pid " in second.stderr

    (gokku.root.parent / "release-api").touch()
    assert first.wait(60) == 0, first.stderr.read()
    assert branch(gokku) == held and not branch(gokku, name="other")
    assert build(gokku)["REVISION"] == held + "\n"


def test_a_client_killed_mid_deploy_leaves_nothing(door: Door, gokku, api, work) -> None:
    first = rev(work, "HEAD")
    assert git(door, "push", remote(door, "api"), "main", cwd=work).code == 0
    commit(work, "HOLD", b"")
    push = _start_push(door, work, "api")
    held = gokku.root.parent / "held-api"
    assert wait_until(lambda: held.exists() and held.read_text().strip(), 30)
    group = int(held.read_text())
    os.killpg(push.pid, signal.SIGKILL)
    push.wait()
    assert wait_until(lambda: not group_alive(group), 10), "the build's processes are left"
    assert wait_until(lambda: not processes_under(gokku.root, b"hooks/"), 10)
    assert branch(gokku) == first
    assert build(gokku)["REVISION"] == first + "\n"

    # The lock went with it: the next push deploys, and says what became of the cut one.
    held.unlink()
    (work / "HOLD").unlink()
    subprocess.run(["git", "-C", str(work), "commit", "-qam", "no hold"], env=_git_env(door, work))
    latest = rev(work, "HEAD")
    pushed = git(door, "push", remote(door, "api"), "main", cwd=work)
    assert pushed.code == 0, pushed.stderr
    assert build(gokku)["REVISION"] == latest + "\n"
    assert [row[6] for row in deploys(door)] == ["succeeded", "interrupted:", "succeeded"]
    assert list((gokku.root / "apps" / "api" / ".deploys").glob("checkout-*")) == []


def test_a_member_without_write_is_refused_before_any_trigger(
    door: Door, gokku, api, work, keydir: Path
) -> None:
    bob: KeyPair = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
    gokku.ok("access:grant", "bob", "app:api", "--read")
    import shlex

    ssh = shlex.join(door.ssh_argv(key=bob.path)[:-1])
    env = {**_git_env(door, work), "GIT_SSH_COMMAND": ssh}
    pushed = subprocess.run(
        ["git", "push", remote(door, "api"), "main"], cwd=work, env=env, capture_output=True
    )
    assert pushed.returncode != 0
    assert b"bob may not write app 'api'" in pushed.stderr
    for command in ("apps:deploy api", "apps:deploy-set api branch x"):
        refused = door.ssh(command, key=bob.path)
        assert refused.code == 1 and "bob may not write app 'api'" in refused.stderr
    assert triggers(gokku) == []
    assert not (gokku.root / "repos" / "api.git").exists()
    listed = door.ssh("apps:deploys api", key=bob.path)  # reading is what bob may do
    assert listed.code == 0 and listed.stdout == "No deploys of api yet\n"
