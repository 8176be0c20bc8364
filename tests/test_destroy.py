"""A destroyed name takes everything with it: a destroy cut off anywhere (a write or any
of its deletions, killed) is finished by its rerun or by ``doctor --fix``, and the next
app of the name never gets the old commits; apps with deploy records are destroyed; a
service whose create was cut off is not linked and undoing it undoes its links; a plugin
script dies with the command that ran it, and a helper call from anything it left
behind acts on nothing.

The kills are exact: strace stops the CLI with SIGKILL on entering its Nth call of the
kind traced (renames are the writes, unlinks and rmdirs the deletions)."""

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Gokku, write_plugin
from sshkit import group_alive, wait_until

pytestmark = pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")

CHANGES = "rename,renameat,renameat2,unlink,unlinkat,rmdir"
IDENTITY = {
    "GIT_AUTHOR_NAME": "Alice",
    "GIT_AUTHOR_EMAIL": "alice@example.com",
    "GIT_COMMITTER_NAME": "Alice",
    "GIT_COMMITTER_EMAIL": "alice@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def change_points(gokku: Gokku, *args: str) -> list[tuple[str, int]]:
    """Each rename, unlink and rmdir ``gokku ARGS`` itself makes, run to the end, as
    (system call, its count so far): strace counts each system call apart."""
    trace = gokku.root.parent / "trace"
    subprocess.run(
        ["strace", "-f", "-qq", "-o", str(trace), "-e", f"trace={CHANGES}",
         sys.executable, "-m", "gokku", *args],
        env=gokku.env, cwd=REPO, check=True, capture_output=True,
    )  # fmt: skip
    lines = [line.split(None, 1) for line in trace.read_text().splitlines() if "(" in line]
    calls = [call.split("(")[0] for pid, call in lines if pid == lines[0][0]]
    return [(call, calls[: i + 1].count(call)) for i, call in enumerate(calls)]


def killed_at(gokku: Gokku, point: tuple[str, int], *args: str) -> int:
    """Run ``gokku ARGS`` and SIGKILL it as it enters the call POINT names; its exit code."""
    call, n = point
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={call}",
         "-e", f"inject={call}:signal=SIGKILL:when={n}",
         sys.executable, "-m", "gokku", *args],
        env=gokku.env, cwd=REPO, capture_output=True, timeout=120,
    )  # fmt: skip
    return proc.returncode


@pytest.fixture
def pusher(gokku: Gokku, tmp_path: Path) -> dict[str, str]:
    """git's environment for pushing to the local gokku: its "ssh" runs the remote command
    with the gokku CLI on this machine, as the forced command would."""
    ssh = tmp_path / "local-ssh"
    run = f'eval "exec {sys.executable} -m gokku $last"'
    ssh.write_text(f"#!/bin/sh\nfor last; do :; done\n{run}\n")
    ssh.chmod(0o755)
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        **gokku.env,
        **IDENTITY,
        "HOME": str(home),
        "PYTHONPATH": str(REPO),
        "GIT_SSH_COMMAND": str(ssh),
    }


def push(env: dict[str, str], work: Path, text: str) -> None:
    """Commit TEXT into the work tree and push it to app api."""
    if not work.exists():
        subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "file").write_text(text)
    steps = (["add", "file"], ["commit", "-q", "-m", text], ["push", "-q", "-f", "x@h:api", "main"])
    for args in steps:
        subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True)


def remote_heads(env: dict[str, str], work: Path) -> str:
    done = subprocess.run(["git", "ls-remote", "x@h:api"], cwd=work, env=env, capture_output=True)
    return done.stdout.decode()


def test_an_app_destroy_killed_anywhere_is_finished_and_the_next_app_starts_empty(
    gokku: Gokku, pusher: dict[str, str], tmp_path: Path
) -> None:
    work = tmp_path / "home" / "work"
    push(pusher, work, "probe")
    every = change_points(gokku, "apps:destroy", "api", "--force")
    # Every write (the renames) and deletions spread over the whole run, the last ones too.
    chosen = {0, 1, 2, 3, len(every) // 3, len(every) // 2, len(every) - 2, len(every) - 1}
    points = [p for i, p in enumerate(every) if i in chosen or p[0].startswith("rename")]
    for i, n in enumerate(points):
        push(pusher, work, f"old {n}")
        gokku.ok("config:set", "-a", "api", "K=v")
        assert killed_at(gokku, n, "apps:destroy", "api", "--force") == -9, n
        # Whole, or gone from the start: never an app half deleted.
        if "api" in gokku.ok("apps:list").stdout:
            assert gokku.ok("config:get", "-a", "api", "K").stdout == "v\n", n
        if i % 2:  # finished by doctor --fix
            if not (gokku.root / "apps" / "api").exists():
                assert gokku("doctor").code == 1, n
            gokku.ok("doctor", "--fix")
            if (gokku.root / "apps" / "api").exists():
                gokku.ok("apps:destroy", "api", "--force")  # killed before it began
        else:  # finished by its rerun
            rerun = gokku("apps:destroy", "api", "--force")
            assert rerun.code == 0, (n, rerun.stderr)
        assert gokku("apps:destroy", "api", "--force").code == 1, n  # nothing is left
        assert gokku.ok("doctor").stdout == "ok: nothing to report\n", n
        gokku.ok("apps:create", "api")
        assert f"old {n}" not in (remote_heads(pusher, work) + _objects(gokku)), n
        assert sorted(p.name for p in (gokku.root / "repos").iterdir()) == [], n
        gokku.ok("apps:destroy", "api", "--force")


def _objects(gokku: Gokku) -> str:
    """Every commit message reachable in repos/api.git, if there is one."""
    repo = gokku.root / "repos" / "api.git"
    if not repo.exists():
        return ""
    done = subprocess.run(["git", "log", "--all", "--format=%s"], cwd=repo, capture_output=True)
    return done.stdout.decode()


def test_a_repository_left_from_an_earlier_app_is_never_served(
    gokku: Gokku, pusher: dict[str, str], tmp_path: Path
) -> None:
    """What a destroy killed before its repository was touched leaves: the old repository
    beside a new app of the name. It is not the new app's: not cloned, and the first push
    starts a new one."""
    work = tmp_path / "home" / "work"
    push(pusher, work, "old")
    kept = tmp_path / "kept.git"
    shutil.copytree(gokku.root / "repos" / "api.git", kept)
    gokku.ok("apps:destroy", "api", "--force")
    gokku.ok("apps:create", "api")
    shutil.copytree(kept, gokku.root / "repos" / "api.git")
    assert remote_heads(pusher, work) == ""
    assert "app api" in gokku("doctor").stdout
    shutil.rmtree(work)
    push(pusher, work, "new")
    assert "old" not in _objects(gokku).split("\n") and "new" in _objects(gokku)


def test_an_app_with_deploy_settings_is_destroyed(gokku: Gokku) -> None:
    gokku.ok("apps:create", "zz")
    gokku.ok("apps:deploy-set", "zz", "wait", "60")
    gokku.ok("config:set", "-a", "zz", "--env", "prod", "K=v")
    asked = gokku("apps:destroy", "zz")  # not on a terminal: says what goes, destroys nothing
    assert asked.code == 1 and "its variables (1 in 2 environment(s))" in asked.stderr
    gokku.ok("apps:destroy", "zz", "--force")
    assert not (gokku.root / "apps" / "zz").exists()
    assert gokku.ok("doctor").stdout == "ok: nothing to report\n"


@pytest.fixture
def exporter(gokku: Gokku, tmp_path: Path) -> Path:
    """Plugin x: its services give apps URL. An install finds MARK/slow: it starts a
    helper call that escapes its group (setsid) and waits for MARK/go (a minute at most),
    then sleeps (a minute); the helper's exit code goes to MARK/result."""
    mark = tmp_path / "mark"
    mark.mkdir()
    install = f"""set_service_env "$1" URL "x://$1"
if [ -f {mark}/slow ]; then
  rm -f {mark}/slow
  setsid bash -c 'for _ in $(seq 1200); do [ -f "$0/go" ] && break; sleep 0.05; done
    [ -f "$0/go" ] && set_service_env "$1" URL hijacked; echo $? > "$0/result"' {mark} "$1" \\
    </dev/null >/dev/null 2>&1 &
  echo $$ > {mark}/pid
  sleep 60
fi
"""
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "src" / "x", install=install)))
    gokku.ok("apps:create", "api")
    return mark


def env_of(gokku: Gokku) -> dict[str, str]:
    return json.loads(gokku.ok("config:list", "-a", "api", "--format", "json").stdout)


def record(gokku: Gokku, name: str) -> dict:
    return json.loads((gokku.root / "services" / name / "config.json").read_text())


def test_a_service_left_creating_is_shown_creating_and_never_linked(
    gokku: Gokku, exporter: Path
) -> None:
    gokku.ok("services:create", "x", "--name", "first")  # installs the helpers' file
    # Killed at its last write: installed, never marked created.
    settle = ("rename", 3)  # the record, its directory, then settling after install
    assert killed_at(gokku, settle, "services:create", "x", "--name", "db") == -9
    assert record(gokku, "db")["state"] == "creating"
    listed = json.loads(gokku.ok("services:list", "--format", "json").stdout)
    assert {s["name"]: s["status"] for s in listed}["db"] == "creating"
    refused = gokku("services:link", "db", "-a", "api")
    assert refused.code == 1 and "being created" in refused.stderr
    assert env_of(gokku) == {} and record(gokku, "db")["links"] == []


def test_undoing_a_create_cut_off_undoes_its_links(gokku: Gokku, exporter: Path) -> None:
    """A record left creating with a link (as an older gokku let it be made): the next
    create of the name unlinks it before removing it, so no variable is left without
    the service that wrote it."""
    gokku.ok("services:create", "x", "--name", "db")
    gokku.ok("services:link", "db", "-a", "api")
    path = gokku.root / "services" / "db" / "config.json"
    path.write_text(json.dumps({**record(gokku, "db"), "state": "creating"}))
    again = gokku("services:create", "x", "--name", "db")
    assert again.code == 0 and "cut off: undoing it first" in again.stderr
    assert "Unlinked db from api" in again.stderr
    assert env_of(gokku) == {} and record(gokku, "db")["links"] == []


def test_a_script_dies_with_its_killed_command_and_what_escaped_acts_on_nothing(
    gokku: Gokku, exporter: Path
) -> None:
    mark = exporter
    try:
        _kill_an_install_and_make_the_service_again(gokku, mark)
    finally:
        (mark / "go").touch()  # what escaped the group goes on, and ends
    assert wait_until(lambda: (mark / "result").exists() and (mark / "result").read_text(), 60)
    assert (mark / "result").read_text().strip() != "0"
    assert record(gokku, "db")["env"] == {"URL": "x://db"}
    assert "state" not in record(gokku, "db")


def _kill_an_install_and_make_the_service_again(gokku: Gokku, mark: Path) -> None:
    """services:create db killed (SIGKILL) during its install; then made again."""
    (mark / "slow").touch()
    cli = subprocess.Popen(
        [sys.executable, "-m", "gokku", "services:create", "x", "--name", "db"],
        env=gokku.env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    assert wait_until(lambda: (mark / "pid").exists() and (mark / "pid").read_text(), 60)
    install = int((mark / "pid").read_text())
    assert group_alive(install)
    cli.send_signal(signal.SIGKILL)
    cli.wait()
    assert wait_until(lambda: not group_alive(install), 10), "the install outlived its command"
    gokku.ok("services:create", "x", "--name", "db")  # undoes the cut-off one, makes anew


def test_a_service_destroy_killed_anywhere_is_finished_by_its_rerun_or_doctor(
    gokku: Gokku, exporter: Path
) -> None:
    gokku.ok("services:create", "x", "--name", "db")
    for i, n in enumerate(change_points(gokku, "services:destroy", "db", "--force")):
        gokku.ok("services:create", "x", "--name", "db")
        assert killed_at(gokku, n, "services:destroy", "db", "--force") == -9, n
        if i % 2 and not (gokku.root / "services" / "db").exists():
            gokku.ok("doctor", "--fix")
        else:
            rerun = gokku("services:destroy", "db", "--force")
            assert rerun.code == 0, (n, rerun.stderr)
        assert gokku.ok("doctor").stdout == "ok: nothing to report\n", n
        assert sorted(p.name for p in (gokku.root / "services").glob("*db*")) == [], n
