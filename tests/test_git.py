"""``git push``, ``git fetch`` and ``git clone gokku@host:APP`` with the real git client,
through both SSH doors: the first push creates the app, what was pushed comes back
byte for byte, bad remotes are refused with one line and change nothing, and a push cut
off halfway leaves the repository as it was."""

import concurrent.futures
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import Result
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, processes_under, wait_until

IDENTITY = {
    "GIT_AUTHOR_NAME": "Alice",
    "GIT_AUTHOR_EMAIL": "alice@example.com",
    "GIT_COMMITTER_NAME": "Alice",
    "GIT_COMMITTER_EMAIL": "alice@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(door: Door, *args: str, cwd: Path, wrap: str = "") -> Result:
    """Run git with ssh pointed at ``door``; ``wrap`` is put in front of ssh's stdin."""
    ssh = shlex.join(door.ssh_argv()[:-1])  # without user@host: git adds it
    env = {**os.environ, **IDENTITY, "HOME": str(cwd.parent), "GIT_SSH_COMMAND": wrap + ssh}
    proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, timeout=120)
    said = door.server_said() if proc.returncode != 0 else ""
    return Result(proc.returncode, proc.stdout, proc.stderr, said)


def remote(door: Door, app: str) -> str:
    return f"{door.user}@127.0.0.1:{app}"


def commit(work: Path, name: str, data: bytes) -> str:
    (work / name).write_bytes(data)
    env = {**os.environ, **IDENTITY, "HOME": str(work.parent)}
    for args in (["add", "--", name], ["commit", "-q", "-m", f"add {name}"]):
        subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True)
    return rev(work, "HEAD")


def rev(repo: Path, ref: str) -> str:
    done = subprocess.run(["git", "rev-parse", ref], cwd=repo, capture_output=True, text=True)
    return done.stdout.strip()


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """A repository with one commit on ``main``: a binary file and a name with spaces."""
    path = tmp_path / "home" / "work"
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    commit(path, "data file.bin", bytes(range(256)) * 64)
    return path


def test_first_push_creates_the_app_and_a_clone_gives_it_back(door: Door, gokku, work) -> None:
    pushed = git(door, "push", remote(door, "api"), "main", cwd=work)
    assert pushed.code == 0, pushed.stderr
    assert "Created app api" in pushed.stderr
    assert "api" in gokku.ok("apps:list").stdout.split()

    second = commit(work, "more", os.urandom(100_000))
    again = git(door, "push", remote(door, "api"), "main", cwd=work)
    assert again.code == 0, again.stderr
    assert "Created app" not in again.stderr

    clone = work.parent / "clone"
    cloned = git(door, "clone", "-q", remote(door, "api"), str(clone), cwd=work.parent)
    assert cloned.code == 0, cloned.stderr
    assert rev(clone, "HEAD") == second  # HEAD follows the pushed branch
    for name in ("data file.bin", "more"):
        assert (clone / name).read_bytes() == (work / name).read_bytes()
    listed = git(door, "ls-remote", remote(door, "api"), cwd=work)
    assert listed.stdout.split() == [second, "HEAD", second, "refs/heads/main"]


def test_url_forms_name_the_same_app(door: Door, gokku, work) -> None:
    url = f"ssh://{door.user}@127.0.0.1:{door.port}/api.git"
    assert git(door, "push", url, "main", cwd=work).code == 0
    assert git(door, "push", remote(door, "api.git"), "main:other", cwd=work).code == 0
    listed = git(door, "ls-remote", "--heads", remote(door, "/api/"), cwd=work).stdout.split()
    assert listed[1::2] == ["refs/heads/main", "refs/heads/other"]
    assert gokku.ok("apps:list").stdout == "api\n"


@pytest.mark.parametrize(
    ("app", "message"),
    [
        ("../etc", "invalid app name '../etc'"),
        ("Api", "invalid app name 'Api'"),
        ("a/b", "invalid app name 'a/b'"),
        ("api;id", "invalid app name 'api;id'"),
        ("~/api", "invalid app name '~/api'"),
        ("", "invalid app name ''"),
    ],
)
def test_bad_remotes_are_refused_and_change_nothing(door: Door, gokku, work, app, message):
    before = _state(gokku)
    pushed = git(door, "push", remote(door, app), "main", cwd=work)
    assert pushed.code != 0
    refusals = [line for line in pushed.stderr.splitlines() if line.startswith(" !     ")]
    assert len(refusals) == 1 and message in refusals[0], pushed.stderr
    assert _state(gokku) == before
    assert not (gokku.root / "repos").exists() or not any((gokku.root / "repos").iterdir())


def _state(gokku) -> dict[str, bytes]:
    """Everything but the audit log, which records the refusal."""
    return {k: v for k, v in gokku.snapshot().items() if k != "log/audit.log"}


def test_fetching_what_was_never_pushed_says_why(door: Door, gokku, work) -> None:
    gokku.ok("apps:create", "web")
    for app, message in (
        ("web", "nothing has been pushed to app 'web' yet"),
        ("nope", "app 'nope' does not exist"),
    ):
        cloned = git(door, "clone", remote(door, app), str(work.parent / app), cwd=work.parent)
        assert cloned.code != 0
        assert f" !     {message}" in cloned.stderr
        assert not (work.parent / app).exists()
    assert gokku.ok("apps:list").stdout == "web\n"


def test_concurrent_first_pushes_all_land(door: Door, gokku, work) -> None:
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        results = list(
            pool.map(
                lambda i: git(door, "push", remote(door, "api"), f"main:b{i}", cwd=work), range(4)
            )
        )
    assert [r.code for r in results] == [0] * 4, [r.stderr for r in results]
    assert sum("Created app api" in r.stderr for r in results) == 1
    heads = git(door, "ls-remote", "--heads", remote(door, "api"), cwd=work).stdout.split()
    assert heads[1::2] == [f"refs/heads/b{i}" for i in range(4)]


def test_a_push_cut_off_halfway_changes_nothing(door: Door, gokku, work) -> None:
    first = rev(work, "HEAD")
    assert git(door, "push", remote(door, "api"), "main", cwd=work).code == 0
    commit(work, "big", os.urandom(8 << 20))
    cut = git(door, "push", remote(door, "api"), "main", cwd=work, wrap="head -c 1000000 | ")
    assert cut.code != 0
    repo = gokku.root / "repos" / "api.git"
    assert rev(repo, "refs/heads/main") == first
    fsck = subprocess.run(["git", "fsck", "--no-progress"], cwd=repo, capture_output=True)
    assert fsck.returncode == 0, fsck.stderr
    assert wait_until(lambda: not processes_under(gokku.root, b"receive-pack"), 10)
    assert list(repo.glob("objects/incoming-*")) == []
