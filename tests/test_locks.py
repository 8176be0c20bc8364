"""Named locks: re-entrancy without touching this process's environment, its state
restored on every release, and a plugin script's call back into gokku passing through
the locks its parent holds (it would wait on its parent forever otherwise)."""

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, Gokku

from gokku.context import Context, Identity, Request
from gokku.paths import Root
from gokku.runner import base_env
from gokku.storage import HELD_LOCKS_VAR, held_locks, lock


def _free(path: Path) -> bool:
    """Whether another open file description could take the flock now."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def test_nested_and_reentrant_locks_restore_the_state_on_release(tmp_path: Path) -> None:
    environ = dict(os.environ)
    assert held_locks() == set()
    with lock(tmp_path, "a"):
        assert held_locks() == {"a"}
        with lock(tmp_path, "b"):
            assert held_locks() == {"a", "b"}
            with lock(tmp_path, "a"):  # re-entrant: passes through, releases nothing
                assert held_locks() == {"a", "b"}
            assert held_locks() == {"a", "b"} and not _free(tmp_path / "a.lock")
        assert held_locks() == {"a"} and _free(tmp_path / "b.lock")
        with pytest.raises(RuntimeError), lock(tmp_path, "c"):
            raise RuntimeError
        assert held_locks() == {"a"} and _free(tmp_path / "c.lock")
    assert held_locks() == set() and _free(tmp_path / "a.lock")
    assert dict(os.environ) == environ  # never written


def test_children_learn_the_held_locks_only_while_they_are_held(tmp_path: Path) -> None:
    ctx = Context(Request(argv=[], identity=Identity(name="t")), Root(tmp_path))
    with lock(tmp_path, "service-db"), lock(tmp_path, "app-api"):
        assert base_env(ctx)[HELD_LOCKS_VAR] == "app-api service-db"
    assert HELD_LOCKS_VAR not in base_env(ctx)


def test_a_call_back_into_gokku_passes_through_its_parents_lock(
    gokku: Gokku, tmp_path: Path
) -> None:
    gokku.ok("apps:create", "api")
    root = Root(gokku.root)
    ctx = Context(Request(argv=[], identity=Identity(name="t")), root)
    command = [sys.executable, "-m", "gokku", "config:set", "-a", "api", "K=v"]
    with lock(root.locks, "app-api"):
        child = {**gokku.env, "GOKKU_LOCK_TIMEOUT": "1"}
        waits = subprocess.run(command, env=child, cwd=REPO, capture_output=True, text=True)
        assert waits.returncode == 1 and "app-api is locked by pid" in waits.stderr
        passes = subprocess.run(
            command, env={**child, **base_env(ctx)}, cwd=REPO, capture_output=True
        )
        assert passes.returncode == 0, passes.stderr
    assert gokku.ok("config:get", "-a", "api", "K").stdout == "v\n"
