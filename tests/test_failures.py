"""Unexpected failures: a bug or a full disk is one line on stderr and exit 1, never a
traceback; the traceback goes to ``log/gokku.log``; a failed write leaves the old file."""

import re
import stat
from pathlib import Path

import pytest
from conftest import Gokku
from diskfull import fill, temp_files, tmpfs

INTERNAL = re.compile(r" !     internal error: TypeError: .+; details in log/gokku\.log\n")


# Python imports ``sitecustomize`` from PYTHONPATH at start: this one plants a bug in the
# code that lists keys (the state itself is checked on read, so no file can stand in).
PLANTED_BUG = """
import gokku.keys

def load(root):
    raise TypeError("a planted bug")

gokku.keys.load = load
"""


@pytest.fixture
def planted_bug(gokku: Gokku, tmp_path: Path) -> None:
    """Listing keys meets a bug: an exception no command expects."""
    hook = tmp_path / "planted"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(PLANTED_BUG)
    gokku.env["PYTHONPATH"] = f"{hook}:{gokku.env['PYTHONPATH']}"


def test_an_unexpected_exception_is_one_line_and_its_traceback_is_logged(
    gokku: Gokku, planted_bug: None
) -> None:
    first = gokku("ssh-keys:list")
    second = gokku("ssh-keys:list", "--format", "json")
    for result in (first, second):
        assert result.code == 1 and result.out == b""
        assert INTERNAL.fullmatch(result.stderr), result.stderr
    log = gokku.root / "log" / "gokku.log"
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert text.count("Traceback (most recent call last)") == 2  # appended, not replaced
    assert "argv ['ssh-keys:list', '--format', 'json']" in text
    assert "TypeError" in text


def test_the_line_says_so_when_the_traceback_cannot_be_logged(
    gokku: Gokku, planted_bug: None
) -> None:
    (gokku.root / "log" / "gokku.log").mkdir(parents=True)  # unwritable: a directory
    result = gokku("ssh-keys:list")
    assert result.code == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(" !     internal error: TypeError: ")
    log = gokku.root / "log" / "gokku.log"
    assert line.endswith(f"; its details could not be logged (is a directory: {log})")


@pytest.mark.parametrize("full", ["apps", "."], ids=["apps", "whole-state"])
def test_config_set_on_a_full_disk_is_one_line_and_keeps_the_old_env(
    gokku: Gokku, full: str
) -> None:
    """With the whole state on the full disk the locks are there too: the holder line a
    lock writes (for the message of whoever waits) is not worth failing for; the write
    that matters is."""
    with tmpfs(gokku.root / full) as disk:
        gokku.ok("apps:create", "api")
        gokku.ok("config:set", "-a", "api", "OLD=kept")
        env = gokku.root / "apps" / "api" / "shared" / ".env"
        before = env.read_bytes()
        fill(disk)
        result = gokku("config:set", "-a", "api", "NEW=" + "x" * 20000)
        assert result.code == 1 and result.out == b""
        assert result.stderr == f" !     no space left on device writing {env}\n"
        assert env.read_bytes() == before
        assert temp_files(disk) == []


def test_a_system_error_is_one_line_naming_the_file(gokku: Gokku) -> None:
    gokku.ok("apps:create", "api")
    lock = gokku.root / "locks" / "app-api.lock"
    lock.unlink()
    lock.mkdir()
    result = gokku("config:set", "-a", "api", "A=1")
    assert result.code == 1
    assert result.stderr == f" !     is a directory: {lock}; details in log/gokku.log\n"
    assert "IsADirectoryError" in (gokku.root / "log" / "gokku.log").read_text()
