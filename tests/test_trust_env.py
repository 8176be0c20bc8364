"""A member who may write one app tries to run code as the server through the app's
variables, through both SSH doors: bash's SHELLOPTS and PS4, LD_PRELOAD of a real shared
object in the pushed checkout (the trigger's working directory), PYTHONPATH with a
``sitecustomize.py`` there, GOKKU_REMOTE/GOKKU_SSH/GIT_DIR to turn the helpers' nested
gokku into a client that runs GOKKU_SSH, and GOKKU_TRACE=1 to trace without ``--trace``.

The deploy plugins never run the pushed code: ``probe`` only calls a helper and prints;
``exporter`` does what the README once suggested, exporting the app's variables into its
own shell before it calls a helper (the callback must not care)."""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, make_key
from test_git import IDENTITY, commit

# What the trigger was started with, as execve gave it (bash run as root does not import
# PS4 from it, whoever set it: the names show it was never there).
PROBE = """
echo "options=$-"
echo "environment: $(tr '\\0' '\\n' </proc/$$/environ | cut -d= -f1 | tr '\\n' ' ')"
port=$(get_app_base_port "$1")
echo "port=$port"
"""
# Only builtins after the variables are exported: what the plugin runs itself with them
# is its own doing; the helper's callback is what is under test.
EXPORTER = """
set -a
. "$GOKKU_APP_ENV_FILE"
set +a
port=$(get_app_base_port "$1")
echo "exported port=$port"
"""
EVIL_C = """
#include <stdio.h>
__attribute__((constructor)) static void evil(void) {
  FILE *f = fopen(MARK, "a");
  if (f) { fputs("preloaded\\n", f); fclose(f); }
}
"""


def preload_library(path: Path, mark: Path) -> Path:
    """A real shared object at ``path`` that appends a line to ``mark`` when loaded."""
    source = path.with_suffix(".c")
    source.write_text(EVIL_C)
    subprocess.run(["gcc", "-shared", "-fPIC", f'-DMARK="{mark}"', "-o", path, source], check=True)
    source.unlink()
    return path


class Attack:
    """A member's app, its pushed checkout holding a shared object and a sitecustomize.py
    that leave marks when loaded, and a repository whose ``gokku`` remote a client would
    use. ``marks`` are the files only an attack that worked writes."""

    def __init__(self, door: Door, gokku: Gokku, bob: KeyPair, tmp: Path) -> None:
        self.door, self.gokku, self.bob = door, gokku, bob
        self.marks = tmp / "marks"
        self.marks.mkdir()
        self.work = tmp / "home" / "work"
        self.work.mkdir(parents=True)
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.work)], check=True)
        evil = preload_library(self.work / "evil.so", self.marks / "preload")
        commit(self.work, "evil.so", evil.read_bytes())
        site = f"open({str(self.marks / 'site')!r}, 'a').write('site\\n')\n"
        commit(self.work, "sitecustomize.py", site.encode())
        self.client = tmp / "client"
        subprocess.run(["git", "init", "-q", str(self.client)], check=True)
        subprocess.run(
            ["git", "-C", self.client, "remote", "add", "gokku", "ssh://x@127.0.0.1:1/api"],
            check=True,
        )

    def variables(self) -> dict[str, str]:
        """Every attack at once (SHELLOPTS, which bash keeps read-only, aside)."""
        return {
            "PS4": f"$(id >{self.marks}/ps4)",
            "LD_PRELOAD": "./evil.so",
            "PYTHONPATH": ".",
            "GOKKU_REMOTE": "gokku",
            "GIT_DIR": str(self.client / ".git"),
            "GOKKU_SSH": f"sh -c 'id >{self.marks}/ssh' sh",
            "GOKKU_TRACE": "1",
        }

    def push(self) -> None:
        ssh = shlex.join(self.door.ssh_argv(key=self.bob.path)[:-1])
        env = {**os.environ, **IDENTITY, "HOME": str(self.work.parent), "GIT_SSH_COMMAND": ssh}
        where = f"{self.door.user}@127.0.0.1:api"
        pushed = subprocess.run(
            ["git", "push", where, "main"], cwd=self.work, env=env, capture_output=True
        )
        assert pushed.returncode == 0, pushed.stderr

    def as_bob(self, command: str) -> str:
        """Run ``command`` over the door with bob's key; its stderr (a deploy's output)."""
        done = self.door.ssh(command, key=self.bob.path)
        assert done.code == 0, done.stderr
        return done.stderr

    def configure(self, values: dict[str, str]) -> None:
        pairs = " ".join(shlex.quote(f"{key}={value}") for key, value in values.items())
        self.as_bob(f"config:set api PORT=5000 {pairs}")

    def left(self) -> list[str]:
        return sorted(path.name for path in self.marks.iterdir())


def _attack(door: Door, gokku: Gokku, keydir: Path, tmp_path: Path, plugin: str) -> Attack:
    tree = write_plugin(tmp_path / "src" / plugin, commands={"hooks/deploy": plugin_body(plugin)})
    gokku.ok("plugins:add", str(tree), "--name", plugin)
    for app in ("api", "secretapp"):
        gokku.ok("apps:create", app)
    bob = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=bob.public.encode())
    gokku.ok("access:grant", "bob", "app:api")
    attack = Attack(door, gokku, bob, tmp_path)
    attack.push()
    return attack


def plugin_body(plugin: str) -> str:
    return {"probe": PROBE, "exporter": EXPORTER}[plugin]


@pytest.fixture
def probe(door: Door, gokku: Gokku, keydir: Path, tmp_path: Path) -> Attack:
    return _attack(door, gokku, keydir, tmp_path, "probe")


@pytest.fixture
def exporter(door: Door, gokku: Gokku, keydir: Path, tmp_path: Path) -> Attack:
    return _attack(door, gokku, keydir, tmp_path, "exporter")


def _untraced(output: str) -> bool:
    return not any(line.startswith("+") for line in output.splitlines())


def _environment(output: str) -> set[str]:
    """The names the probe found in its own environment."""
    line = next(line for line in output.splitlines() if line.startswith("environment: "))
    return set(line.split()[1:])


def test_shellopts_and_ps4_run_nothing(probe: Attack) -> None:
    probe.configure({"SHELLOPTS": "xtrace", "PS4": f"$(id >{probe.marks}/id)"})
    output = probe.as_bob("apps:deploy api")
    assert "port=5000" in output and _untraced(output), output
    assert {"SHELLOPTS", "PS4"}.isdisjoint(_environment(output))
    assert probe.left() == []


def test_ps4_cannot_grant_the_member_another_app(probe: Attack) -> None:
    grant = "$GOKKU_PYTHON -m gokku access:grant bob app:secretapp"
    ps4 = f"$(PYTHONPATH=$GOKKU_PYTHONPATH {grant} >/dev/null 2>&1)"
    probe.configure({"SHELLOPTS": "xtrace", "PS4": ps4})
    assert "PS4" not in _environment(probe.as_bob("apps:deploy api"))
    assert "secretapp" not in probe.gokku.ok("access:list", "bob").stdout
    assert probe.door.ssh("config:list secretapp", key=probe.bob.path).code == 1


def test_ld_preload_from_the_checkout_loads_nothing(probe: Attack) -> None:
    probe.configure({"LD_PRELOAD": "./evil.so"})
    assert "port=5000" in probe.as_bob("apps:deploy api")
    assert probe.left() == []


def test_the_helpers_gokku_never_becomes_a_client(probe: Attack) -> None:
    probe.configure(
        {
            "GOKKU_REMOTE": "gokku",
            "GIT_DIR": str(probe.client / ".git"),
            "GOKKU_SSH": f"sh -c 'id >{probe.marks}/ssh' sh",
        }
    )
    output = probe.as_bob("apps:deploy api")
    assert "port=5000" in output  # answered here, by the server
    assert {"GOKKU_REMOTE", "GIT_DIR", "GOKKU_SSH"}.isdisjoint(_environment(output))
    assert probe.left() == []


def test_a_callback_is_never_a_client(gokku: Gokku, tmp_path: Path) -> None:
    """What git's hooks start (their environment is not emptied): the server answers,
    whatever GOKKU_REMOTE, GOKKU_SSH and GIT_DIR say."""
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "api", "PORT=5000")
    client = tmp_path / "client"
    subprocess.run(["git", "init", "-q", str(client)], check=True)
    subprocess.run(
        ["git", "-C", client, "remote", "add", "gokku", "ssh://x@127.0.0.1:1/api"], check=True
    )
    mark = tmp_path / "ssh-ran"
    env = {
        **gokku.env,
        "GOKKU_REMOTE": "gokku",
        "GIT_DIR": str(client / ".git"),
        "GOKKU_SSH": f"sh -c 'id >{mark}' sh",
    }
    done = subprocess.run(
        [sys.executable, "-P", "-m", "gokku.callback", "config:get", "-a", "api", "PORT"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert (done.returncode, done.stdout) == (0, "5000\n"), done.stderr
    assert not mark.exists()


def test_gokku_trace_in_the_apps_variables_traces_nothing(probe: Attack) -> None:
    probe.configure({"GOKKU_TRACE": "1"})
    output = probe.as_bob("apps:deploy api")
    assert "port=5000" in output and "options=hB" in output and _untraced(output), output


def test_a_trigger_gets_none_of_the_apps_variables(probe: Attack) -> None:
    probe.configure(probe.variables())
    output = probe.as_bob("apps:deploy api")
    assert "port=5000" in output and _untraced(output), output
    assert set(probe.variables()).isdisjoint(_environment(output))
    assert probe.left() == []


def test_a_helper_callback_ignores_what_the_plugin_exported(exporter: Attack) -> None:
    exporter.configure(exporter.variables())
    output = exporter.as_bob("apps:deploy api")
    assert "exported port=5000" in output and _untraced(output), output
    assert exporter.left() == []
