"""The README's worked examples, walked line by line against a real server, so that the
README stays true: "A first session" and the worked example of "Access", with the
commands exactly as written there. Each runs in bash from a git project on the
"workstation"; the only changes are these explicit rewrites:

- ``gokku@host:2222`` (a remote's URL) becomes the test server's address and port;
- ``ssh [-t] -p 2222 gokku@host`` becomes the test's ssh (its key, throwaway known hosts)
  to the test server;
- ``gokku`` is the client installed as "The gokku command on your machine" says, into a
  HOME without Gokku state (``GOKKU_REMOTE=gokku``, ``GOKKU_SSH`` with the key), except on
  lines marked ``# on the server``, which run this checkout's CLI on the server's state;
  ``git`` gets the same ssh as ``GIT_SSH_COMMAND``;
- the key in use is ``me`` (the admin), then ``dev`` after ``# the developer:`` and
  ``backup`` after ``# the backup job:``.

A line whose comment says ``refused`` must fail with a one-line refusal; every other
line must succeed. What ops/install does before (register the admin's key) and what the
Access example assumes (the project's remote, the postgres plugin) is set up first.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bundled_support import reachable_root
from conftest import REPO, Gokku
from sshlab import make_key, running_server, ssh_argv
from test_bundled_postgres import PG_BIN

pytestmark = pytest.mark.skipif(not PG_BIN, reason="the walk-through uses bundled postgres")

README = REPO / "README.md"
IDENTITY = {
    "GIT_AUTHOR_NAME": "Me",
    "GIT_AUTHOR_EMAIL": "me@example.com",
    "GIT_COMMITTER_NAME": "Me",
    "GIT_COMMITTER_EMAIL": "me@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}
SWITCHES = {"# the developer:": "dev", "# the backup job:": "backup"}


def example(heading: str) -> list[str]:
    """The lines of the first ``sh`` block under ``heading``."""
    text = README.read_text()
    section = text[text.index(f"\n{heading}\n") :]
    start = section.index("```sh\n") + len("```sh\n")
    return section[start : section.index("```", start)].splitlines()


class Walk:
    """A workstation's project with a ``gokku`` on PATH, the keys ``me``, ``dev`` and
    ``backup`` (their ``.pub`` files in the project), and the server they reach."""

    def __init__(self, server: Gokku, port: int, folder: Path) -> None:
        self.server, self.port = server, port
        self.project = folder / "project"
        self.project.mkdir(parents=True)
        keys = folder / "keys"
        keys.mkdir()
        self.keys = {name: make_key(keys, name).path for name in ("me", "dev", "backup")}
        for name, path in self.keys.items():
            (self.project / f"{name}.pub").write_bytes(Path(f"{path}.pub").read_bytes())
        server_bin = folder / "server-bin"
        server_bin.mkdir()
        (server_bin / "gokku").write_text(f'#!/bin/sh\nexec {sys.executable} -m gokku "$@"\n')
        (server_bin / "gokku").chmod(0o755)
        self.server_path = f"{server_bin}:{os.environ['PATH']}"
        self.home = folder / "home"  # the workstation's: no Gokku state, no gokku yet
        self.home.mkdir()
        self.path = f"{self.home / '.local' / 'bin'}:/usr/bin:/bin"
        self.install(example("## The gokku command on your machine"))
        self.git("init", "-q", "-b", "main")
        (self.project / "app.py").write_text("print('hello')\n")
        self.git("add", "app.py")
        self.git("commit", "-q", "-m", "first")

    def install(self, lines: list[str]) -> None:
        """The README's installation of the client, in this checkout, into the HOME."""
        env = {"HOME": str(self.home), "PATH": "/usr/bin:/bin"}
        for line in lines:
            done = subprocess.run(
                ["sh", "-c", line], cwd=REPO, env=env, capture_output=True, text=True
            )
            assert done.returncode == 0, (line, done.stderr)

    def git(self, *args: str) -> None:
        env = {**os.environ, **IDENTITY}
        subprocess.run(["git", *args], cwd=self.project, env=env, check=True, capture_output=True)

    def ssh(self, key: str, with_port: bool) -> str:
        argv = ssh_argv(self.port, "gokku", self.keys[key])[:-1]
        if not with_port:  # the remote's URL gives it
            del argv[argv.index("-p") : argv.index("-p") + 2]
        return shlex.join(argv)

    def rewrite(self, line: str, key: str) -> str:
        line = re.sub(
            r"\bssh (-t )?-p 2222 gokku@host\b",
            lambda m: f"{self.ssh(key, True)} {m.group(1) or ''}gokku@127.0.0.1",
            line,
        )
        line = line.replace("gokku@host:2222", f"gokku@127.0.0.1:{self.port}")
        assert "host" not in line.replace("127.0.0.1", ""), f"not pointed at the test: {line}"
        return line

    def run(self, lines: list[str]) -> None:
        key = "me"
        for line in lines:
            if line in SWITCHES:
                key = SWITCHES[line]
                continue
            comment = line.partition("#")[2]
            if "on the server" in comment:
                env = {**self.server.env, "PATH": self.server_path}
            else:
                ssh = self.ssh(key, False)
                env = {**IDENTITY, "HOME": str(self.home), "PATH": self.path}
                env.update(GOKKU_REMOTE="gokku", GOKKU_SSH=ssh, GIT_SSH_COMMAND=ssh)
            done = subprocess.run(
                ["bash", "-c", "set -o pipefail\n" + self.rewrite(line, key)],
                cwd=self.project,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=120,
            )
            if "refused" in comment:
                refusals = [e for e in done.stderr.splitlines() if e.startswith(" !     ")]
                assert done.returncode == 1 and len(refusals) == 1, (line, done.stderr)
            else:
                assert done.returncode == 0, (line, done.returncode, done.stderr)


@pytest.fixture
def walk(tmp_path: Path) -> Iterator[Walk]:
    with reachable_root() as server, running_server(server.env) as (_, port):
        yield Walk(server, port, tmp_path)


def test_a_first_session(walk: Walk) -> None:
    key = Path(f"{walk.keys['me']}.pub").read_bytes()
    walk.server.ok("ssh-keys:add", "me", "--role", "admin", input=key)  # ops/install's part
    walk.run(example("## A first session"))
    assert walk.server.ok("config:get", "api", "MSG").stdout == 'a b "c"\n'
    assert (walk.project / "db.dump").read_bytes()[:5] == b"PGDMP"
    assert (walk.server.root / "repos" / "api.git").is_dir()
    assert walk.server.ok("services:list").stdout == "No services\n"


def test_the_access_example(walk: Walk) -> None:
    walk.git("remote", "add", "gokku", f"ssh://gokku@127.0.0.1:{walk.port}/api")
    walk.server.ok("plugins:add", "postgres")
    walk.run(example("## Access"))
    assert walk.server.ok("config:get", "api", "MSG").stdout == "hello\n"
    assert (walk.project / "db.dump").read_bytes()[:5] == b"PGDMP"
    last = json.loads((walk.server.root / "log" / "audit.log").read_text().splitlines()[-1])
    assert (last["key"], last["denied"].split(":")[0]) == (
        "backup",
        "backup may not write service 'db'",
    )
