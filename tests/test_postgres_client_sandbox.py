"""psql for a member, tried as an attacker would: ``pg:connect`` and a SQL file's
``pg:import`` are psql, whose ``\\!`` runs shell commands and ``\\copy``, ``\\o``, ``\\i``
reach files, all as the account Gokku runs as. A member with write access to a service
gets psql in the sandbox apps' code runs in (``run_client_in_sandbox``): none of
GOKKU_ROOT, nothing it can write there. Where no sandbox can be made (here: Gokku as root)
a member is refused in one line and an admin's psql runs as it is. Real PostgreSQL, both
SSH doors, the state given to ``nobody`` as ops/install gives it a user of its own."""

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import reachable_root, run_in_pty
from conftest import Gokku
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, make_key
from test_bundled_postgres import PG_BIN

from gokku import sandbox

pytestmark = pytest.mark.skipif(not PG_BIN, reason="PostgreSQL server binaries are not installed")

# What a member's psql tries through its shell escape and its file commands; each says
# how it went on stdout.
ESCAPES = """
\\! test -e {root}/ssh/keys.json && echo "keys: seen" || echo "keys: hidden"
\\! cat {root}/services/db/settings.env >/dev/null 2>&1 && echo "read" || echo "no settings"
\\! touch {root}/planted 2>/dev/null && echo "write: done" || echo "write: refused"
\\! echo "home: $HOME; password: ${{PGPASSWORD:+set}}"
select current_user;
\\o {root}/apps/api/out
"""


def _estate(gokku: Gokku, keydir: Path) -> KeyPair:
    """Service db (linked to app api), and bob, a member who may write db: his key."""
    gokku.ok("plugins:add", "postgres")
    gokku.ok("services:create", "postgres", "--name", "db")
    gokku.ok("apps:create", "api")
    gokku.ok("services:link", "db", "-a", "api")
    bob = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
    gokku.ok("access:grant", "bob", "service:db")
    return bob


def _state(gokku: Gokku) -> dict[str, bytes]:
    return {k: v for k, v in gokku.snapshot().items() if not k.startswith("log/")}


@pytest.mark.parametrize("state_owner", ["nobody"])
def test_a_members_psql_runs_in_the_sandbox(door: Door, gokku: Gokku, keydir: Path) -> None:
    bob = _estate(gokku, keydir)
    before = _state(gokku)
    root = shlex.quote(str(gokku.root.resolve()))
    escapes = ESCAPES.format(root=root).encode()
    tried = door.ssh("pg:connect db -qtA", input=escapes, key=bob.path)
    said = tried.stdout.splitlines()
    assert said[:4] == [
        "keys: hidden",
        "no settings",
        "write: refused",
        "home: /tmp; password: set",
    ], tried.stderr
    assert said[4:] == ["app"]  # as the apps' role
    assert "No such file or directory" in tried.stderr  # \o into the state
    # A SQL file's import is psql too.
    planting = b"\\! touch " + root.encode() + b"/planted\n"
    imported = door.ssh("pg:import db", input=planting, key=bob.path)
    assert imported.code == 0, imported.stderr
    assert _state(gokku) == before

    # The superuser, and moving a service onto the apps' role, are admins' only.
    superuser = door.ssh("pg:connect db --superuser", input=b"select 1;", key=bob.path)
    assert (superuser.code, superuser.stdout) == (1, "")
    assert superuser.stderr == (
        " !     --superuser runs SQL that reaches the server's account: admins only\n"
    )
    moved = door.ssh("pg:app-role db", key=bob.path)
    assert moved.code == 1 and "bob may not" in moved.stderr and moved.stderr.count("\n") == 1
    assert _state(gokku) == before


class TestAsRoot:
    """Gokku as root: the sandbox would still own root's files, so it is not made. The
    state where the servers' user (postgres, under root) can reach it."""

    @pytest.fixture
    def reachable(self) -> Iterator[Gokku]:
        with reachable_root() as gokku:
            yield gokku

    # The door fixtures build on these two.
    @pytest.fixture
    def gokku(self, reachable: Gokku) -> Gokku:
        return reachable

    @pytest.fixture
    def base_env(self, reachable: Gokku) -> dict[str, str]:
        return reachable.env

    def test_a_member_gets_no_psql_and_an_admin_does(
        self, door: Door, gokku: Gokku, keydir: Path
    ) -> None:
        bob = _estate(gokku, keydir)
        before = _state(gokku)
        refusal = f" !     no sandbox for clients: {sandbox.AS_ROOT}; {sandbox.AS_ROOT_REMEDY}"
        refused = door.ssh("pg:connect db", input=b"select 1;", key=bob.path)
        assert (refused.code, refused.stdout, refused.stderr) == (1, "", refusal + "\n")
        # An import of SQL (a dump is no psql's) asks before it says what it will do.
        refused = door.ssh("pg:import db", input=b"create table t (id int);", key=bob.path)
        assert (refused.code, refused.stdout, refused.stderr) == (1, "", refusal + "\n")
        assert _state(gokku) == before
        admin = door.ssh("pg:connect db -qtA", input=b"\\! id -u\nselect current_user;")
        assert admin.stdout == "0\napp\n"


@pytest.mark.parametrize("state_owner", ["nobody"])
def test_ctrl_c_in_a_sandboxed_psql_is_psqls(gokku: Gokku) -> None:
    """On a terminal the Ctrl-C goes to the whole foreground group, bwrap included: bwrap
    must not die of it (and take psql along), psql clears the line and goes on."""
    gokku.ok("plugins:add", "postgres")
    gokku.ok("services:create", "postgres", "--name", "db")
    dialogue = (
        (rb"db=> ", b"select 'never"),
        (rb"never", b"\x03"),
        (rb"db=> ", b"select 6 * 7 as answer;\r"),
        (rb"\(1 row\).*db=> ", b"\\q\r"),
    )
    result = run_in_pty(
        gokku, "pg:connect", "db", stdin_tty=True, stdout_tty=True, dialogue=dialogue
    )
    assert result.code == 0, result.err
    assert b" answer \r\n--------\r\n     42\r\n" in result.out
