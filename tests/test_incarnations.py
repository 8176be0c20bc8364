"""A grant belongs to one incarnation of a name: a destroy cut off at any of its writes
(SIGKILL, or a full disk at the registry write) never lets the next app or service of that
name be reached with the old grant, through either door; ``access:grant`` racing a destroy
never grants a name that is gone; grants from before incarnations keep holding on the
app they were given on, and on nothing made since.

The cuts are exact: strace stops the CLI (SIGKILL) or fails its call (ENOSPC) on entering
its Nth rename, and every write is a temp file renamed into place."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Gokku
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, make_key, wait_until
from test_consistency import RENAMES, writes_of

from gokku.paths import Root
from gokku.storage import HELD_LOCKS_VAR, lock

pytestmark = pytest.mark.skipif(not shutil.which("strace"), reason="needs strace")

# How a write is cut: the process killed, or the disk full at that rename.
CUTS = {"killed": "signal=SIGKILL", "disk full": "error=ENOSPC"}


def cut_at_write(gokku: Gokku, n: int, how: str, *args: str) -> int:
    """Run ``gokku ARGS`` with its Nth rename cut ``how`` (a CUTS value); its exit code."""
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-o", "/dev/null", "-e", f"trace={RENAMES}",
         "-e", f"inject={RENAMES}:{how}:when={n}",
         sys.executable, "-m", "gokku", *args],
        env=gokku.env, cwd=REPO, capture_output=True, timeout=120,
    )  # fmt: skip
    return proc.returncode


@pytest.fixture
def bob(gokku: Gokku, keydir: Path) -> KeyPair:
    key = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=key.public.encode())
    return key


def grants_of(gokku: Gokku, key: str) -> dict[str, str]:
    listing = json.loads(gokku.ok("access:list", key, "--format", "json").stdout)
    return listing[0]["grants"]


# What bob tries on the new incarnation, and the refusal it gets.
ATTEMPTS = {
    "app": ("config:set -a api STOLEN=1", "may not write app 'api'"),
    "service": ("services:info db", "may not read service 'db'"),
}


@pytest.mark.parametrize("kind", ["app", "service"])
def test_a_destroy_cut_at_any_write_leaves_no_grant_to_the_next_of_its_name(
    door: Door, gokku: Gokku, bob: KeyPair, kind: str
) -> None:
    name = "api" if kind == "app" else "db"
    create = ("apps:create", "api") if kind == "app" else ("services:create", "t", "--name", "db")
    destroy = ("apps:destroy" if kind == "app" else "services:destroy", name, "--force")
    attempt, refusal = ATTEMPTS[kind]
    gokku.ok(*create)
    gokku.ok("access:grant", "bob", f"{kind}:{name}")
    assert door.ssh(attempt, key=bob.path).code == 0  # the grant works before
    points = writes_of(gokku, *destroy)
    assert points == 3  # the rename to a tombstone, keys.json, authorized_keys
    for cut, how in CUTS.items():
        for n in range(1, points + 1):
            gokku.ok(*create)
            gokku.ok("access:grant", "bob", f"{kind}:{name}")
            assert cut_at_write(gokku, n, how, *destroy) != 0, (cut, n)
            if (gokku.root / ("apps/api" if kind == "app" else "services/db")).exists():
                gokku.ok(*destroy)  # cut before it was gone: it is destroyed now
            gokku.ok(*create)
            refused = door.ssh(attempt, key=bob.path)
            assert refused.code != 0 and refusal in refused.stderr, (cut, n, refused.stderr)
            assert grants_of(gokku, "bob") == {}, (cut, n)
            gokku.ok(*destroy)


def test_access_grant_racing_a_destroy_never_grants_a_name_that_is_gone(
    gokku: Gokku, bob: KeyPair, ssh_config: None
) -> None:
    """The destroy holds the app's lock while it removes the app; a grant asked meanwhile
    waits for that lock and then finds no app."""
    gokku.ok("apps:create", "api")
    root = Root(gokku.root)
    with lock(root.locks, "app-api", "a destroy, slowed down"):
        grant = subprocess.Popen(
            [sys.executable, "-m", "gokku", "access:grant", "bob", "app:api"],
            env=gokku.env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert wait_until(lambda: grant.poll() is not None or _opened(grant.pid, "app-api"), 30)
        # The destroy itself, as the holder of the app's lock runs it.
        gokku.ok("apps:destroy", "api", "--force", env={HELD_LOCKS_VAR: "app-api"})
    _, err = grant.communicate(timeout=60)
    assert grant.returncode == 1 and "app 'api' does not exist" in err.decode()
    gokku.ok("apps:create", "api")
    assert grants_of(gokku, "bob") == {}


def _opened(pid: int, lock_name: str) -> bool:
    """Whether process PID has the lock file LOCK_NAME open (it waits on it, or holds it)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except FileNotFoundError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").endswith(f"/{lock_name}.lock"):
                return True
        except FileNotFoundError:
            continue
    return False


def test_grants_from_before_incarnations_hold_only_on_what_they_were_given_on(
    door: Door, gokku: Gokku, bob: KeyPair
) -> None:
    """A registry and apps written before ids: the old grant on an old app still works; the
    same grant on an app made since (its name destroyed and made again by a destroy that
    was cut off) grants nothing."""
    for app in ("old", "new"):
        gokku.ok("apps:create", app)
    (gokku.root / "apps" / "old" / ".id").unlink()  # made before apps had an id
    registry = gokku.root / "ssh" / "keys.json"
    document = json.loads(registry.read_text())
    for key in document["keys"]:
        if key["name"] == "bob":
            key["grants"] = {"app:old": "write", "app:new": "write"}
            key.pop("bound", None)
    registry.write_text(json.dumps(document))
    assert door.ssh("config:set -a old K=v", key=bob.path).code == 0
    refused = door.ssh("config:set -a new K=v", key=bob.path)
    assert refused.code != 0 and "may not write app 'new'" in refused.stderr
    assert grants_of(gokku, "bob") == {"app:old": "write"}
