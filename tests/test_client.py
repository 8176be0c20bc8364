"""The workstation client (``gokku`` with a git remote): a real git repository whose
remotes name the test server, the real OpenSSH client (``GOKKU_SSH`` gives it the test's
key), through both doors. Arguments arrive exactly, exit codes and bytes pass through, the
app and the port come from the remote, and a bad remote runs nothing."""

import ast
import hashlib
import json
import os
import re
import runpy
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from bundled_support import run_in_pty
from conftest import REPO, Gokku, Result, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, ssh_argv

from gokku import client, shapes
from gokku.commands import BUILTINS
from gokku.paths import SYSTEM_ROOT


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@dataclass
class Workstation:
    """The CLI with no state of its own, run in a git repository (``repo``)."""

    cli: Gokku
    repo: Path

    def __call__(self, *args: str, **kwargs) -> Result:
        return self.cli(*args, cwd=self.repo, **kwargs)


def ssh_command(door: Door, with_port: bool = False) -> str:
    """The test's ssh (its key, throwaway known hosts) for GOKKU_SSH, without the
    destination; without ``-p`` unless asked: the remote's URL gives the port."""
    argv = ssh_argv(door.port, door.user, door.key.path)[:-1]
    if not with_port:
        at = argv.index("-p")
        del argv[at : at + 2]
    return shlex.join(argv)


def workstation_for(door: Door, folder: Path, base_env: dict[str, str]) -> Workstation:
    """A repository whose remote ``gokku`` is the server's app ``api`` (the port in the
    URL) and ``other`` its app ``web`` (scp form, no port: GOKKU_SSH must give it)."""
    repo = folder / "project"
    repo.mkdir(parents=True)
    git(repo, "init", "-q")
    git(repo, "remote", "add", "gokku", f"ssh://{door.user}@127.0.0.1:{door.port}/api")
    git(repo, "remote", "add", "other", f"{door.user}@127.0.0.1:web.git")
    env = {key: value for key, value in base_env.items() if key != "GOKKU_ROOT"}
    (folder / "home").mkdir()  # a workstation's HOME: no Gokku state, no ssh config
    env.update(GOKKU_REMOTE="gokku", GOKKU_SSH=ssh_command(door), HOME=str(folder / "home"))
    return Workstation(Gokku(folder / "no-state", env), repo)


def state(gokku: Gokku) -> dict[str, bytes]:
    """The server's state but its logs (each SSH command adds an audit line)."""
    return {path: data for path, data in gokku.snapshot().items() if not path.startswith("log/")}


@pytest.fixture
def workstation(door: Door, tmp_path: Path, base_env: dict[str, str]) -> Workstation:
    return workstation_for(door, tmp_path / "workstation", base_env)


def test_arguments_arrive_exactly(workstation: Workstation, gokku: Gokku) -> None:
    gokku.ok("apps:create", "api")
    words = ["a b", '"c"', "it's", "$HOME", "`id`", "x\ny", "", "*", "back\\slash", "-a"]
    shown = workstation("t:args", *words)
    assert shown.code == 0, shown.stderr
    assert shown.stdout == "".join(f"[{word}]\n" for word in words)

    assert workstation("config:set", "-a", "api", 'MSG=a b "c"').code == 0
    assert workstation("config:set", "api", "TWO=$x\nline 2").code == 0  # Dokku's form
    assert gokku.ok("config:get", "api", "MSG").stdout == 'a b "c"\n'
    assert gokku.ok("config:get", "api", "TWO").stdout == "$x\nline 2\n"


def test_the_plain_ssh_forms_the_readme_shows(door: Door, gokku: Gokku) -> None:
    """Without the client: the quoting done by hand, ``--`` before a global flag."""
    gokku.ok("apps:create", "api")
    quoted = "config:set -a api 'MSG=a b \"c\"'"
    by_hand = subprocess.run([*door.ssh_argv(), quoted], capture_output=True)
    assert by_hand.returncode == 0, by_hand.stderr
    assert gokku.ok("config:get", "api", "MSG").stdout == 'a b "c"\n'
    flag = subprocess.run([*door.ssh_argv(), "--", "--quiet", "apps:list"], capture_output=True)
    assert (flag.returncode, flag.stdout, flag.stderr) == (0, b"api\n", b"")


def test_the_app_comes_from_the_remote_and_global_flags_pass(
    workstation: Workstation, door: Door, gokku: Gokku
) -> None:
    gokku.ok("apps:create", "api")
    gokku.ok("apps:create", "web")
    quiet = workstation("--quiet", "config:set", "K=from api's remote")
    assert (quiet.code, quiet.stderr) == (0, "")
    assert workstation("config:get", "K").stdout == "from api's remote\n"
    assert workstation("config:get", "api", "K").stdout == "from api's remote\n"
    assert workstation("config:show").stdout == "K='from api'\\''s remote'\n"
    unset = workstation("config:unset", "K")
    assert unset.code == 0, unset.stderr
    assert "K" not in gokku.ok("config:list", "api").stdout

    # --remote other: another remote, whose URL has no port (GOKKU_SSH gives it).
    env = {"GOKKU_SSH": ssh_command(door, with_port=True)}
    moved = workstation("--remote", "other", "config:set", "K=web", env=env)
    assert moved.code == 0, moved.stderr
    assert gokku.ok("config:get", "web", "K").stdout == "web\n"
    listed = workstation("--remote=other", "--format", "json", "apps:list", env=env)
    assert json.loads(listed.stdout) == ["api", "web"]


def test_every_app_verb_takes_its_app_the_same_three_ways(
    workstation: Workstation, gokku: Gokku
) -> None:
    """From the remote, from -a before or after the verb, as Dokku's first word; and
    words that cannot be an app are the verb's own (the server's error, not the app's)."""
    gokku.ok("apps:create", "api")
    gokku.ok("apps:create", "web")
    for argv, app in [
        (["apps:deploys"], "api"),
        (["-a", "web", "apps:deploys"], "web"),
        (["apps:deploys", "-a", "web"], "web"),
        (["apps:deploys", "web"], "web"),
    ]:
        listed = workstation(*argv)
        assert (listed.code, listed.stdout) == (0, f"No deploys of {app} yet\n"), listed
    for verb in ("apps:deploy-log", "apps:deploy"):
        none = workstation(verb, "-a", "web")
        assert none.code == 1 and "'web'" in none.stderr and "usage" not in none.stderr, none
    # A lone word in an optional slot ([N], [REV]) is that, of the remote's app.
    for argv in (["apps:deploy-log", "2"], ["apps:deploy", "1a2b3c"]):
        of_api = workstation(*argv)
        assert of_api.code == 1 and "'api'" in of_api.stderr, of_api
        assert "does not exist" not in of_api.stderr, of_api

    gokku.ok("config:set", "api", "G=1", "H=2", "K=3")
    unset = workstation("config:unset", "G", "H")
    assert unset.code == 0, unset.stderr
    assert gokku.ok("config:list", "api").stdout == "K=3\n"
    assert workstation("config:unset", "web", "K").code == 0  # Dokku's form: web's K
    assert gokku.ok("config:get", "api", "K").stdout == "3\n"
    no_value = workstation("config:set", "MSG")
    assert (no_value.code, no_value.stderr) == (
        2,
        " !     expected KEY=VALUE, got 'MSG'; usage: gokku config:set [-a] APP "
        "KEY=VALUE...|--stdin [--encoded] [--env ENV]\n",
    )


def test_a_plugin_command_takes_a_after_the_verb_where_its_usage_names_it(
    workstation: Workstation, gokku: Gokku, tmp_path: Path
) -> None:
    """``-a APP`` after a plugin's command is the app (GOKKU_APP) when plugin.yml's usage
    names ``-a APP``; else the script's own words (``SVC [-a PASS]``). Dokku's link forms
    take it too, and refuse two different apps."""
    show = 'echo "app=${GOKKU_APP:-} args=$*"\n'
    tree = write_plugin(tmp_path / "envp", commands={"commands/show": show, "commands/pw": show})
    usages = 'commands:\n  show: {usage: "X [-a APP]"}\n  pw: {usage: "X [-a PASS]"}\n'
    (tree / "plugin.yml").write_text(usages)
    gokku.ok("plugins:add", str(tree))
    install = 'set_service_env "$1" REDIS_URL "redis://$1"\n'
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "cache", install=install)))
    gokku.ok("services:create", "cache", "--name", "c")
    for app in ("api", "web"):
        gokku.ok("apps:create", app)
    for argv, shown in [
        (["envp:show", "x"], "app=api args=x"),
        (["envp:show", "x", "-a", "web"], "app=web args=x"),
        (["envp:show", "--app=web", "x", "--", "-a", "y"], "app=web args=x -- -a y"),
        (["-a", "web", "envp:show", "x"], "app=web args=x"),
        (["envp:pw", "x", "-a", "web"], "app= args=x -a web"),
    ]:
        ran = workstation(*argv)
        assert (ran.code, ran.stdout) == (0, shown + "\n"), (argv, ran.stderr)

    linked = workstation("cache:link", "c", "-a", "web")
    assert linked.code == 0, linked.stderr
    assert gokku.ok("config:list", "web").stdout == "REDIS_URL=redis://c\n"
    before = state(gokku)
    twice = workstation("cache:unlink", "c", "api", "-a", "web")
    assert (twice.code, twice.stderr) == (
        2,
        " !     two apps given (api and web); usage: gokku cache:unlink SVC APP [--env ENV]\n",
    )
    assert state(gokku) == before
    assert workstation("cache:unlink", "c", "--app", "web").code == 0
    assert gokku.ok("config:list", "web").stdout == ""


ONE_FILE = REPO / "ops" / "gokku-client"


def test_the_one_file_client_is_this_checkouts_client() -> None:
    """ops/gokku-client is what ops/make-client makes of the client's modules now, and
    each of them is Python 3.9's grammar (macOS's python3)."""
    made = runpy.run_path(str(REPO / "ops" / "make-client"))
    assert made["render"]() == ONE_FILE.read_text(), "stale: run ops/make-client"
    assert ONE_FILE.stat().st_mode & 0o111
    for text in runpy.run_path(str(ONE_FILE), run_name="bundle")["SOURCES"].values():
        ast.parse(text, feature_version=(3, 9))


def test_the_one_file_client_installed_as_the_readme_says(
    workstation: Workstation, gokku: Gokku, tmp_path: Path
) -> None:
    """Copied alone into a bare HOME (no Gokku state, no virtualenv, no package), run by
    the system's python3 (-I: nothing from the environment or the current directory):
    it finds the remote 'gokku' of the project and runs the commands there."""
    home = tmp_path / "bare-home"
    bin_dir = home / ".local" / "bin"
    bin_dir.mkdir(parents=True)
    subprocess.run(["install", "-m", "755", str(ONE_FILE), str(bin_dir / "gokku")], check=True)
    env = {
        "HOME": str(home),
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "GOKKU_SSH": workstation.cli.env["GOKKU_SSH"],
    }

    def run(*argv: str, isolated: bool = False) -> subprocess.CompletedProcess:
        python = ["/usr/bin/python3", "-I", str(bin_dir / "gokku")] if isolated else ["gokku"]
        return subprocess.run(
            [*python, *argv], cwd=workstation.repo, env=env, capture_output=True, text=True
        )

    created = run("apps:create")
    assert created.returncode == 0, created.stderr
    assert run("config:set", 'MSG=a b "c"', isolated=True).returncode == 0
    assert gokku.ok("config:get", "api", "MSG").stdout == 'a b "c"\n'
    listed = run("apps:deploys", isolated=True)
    assert (listed.returncode, listed.stdout) == (0, "No deploys of api yet\n"), listed.stderr
    away = subprocess.run(["gokku", "apps:list"], cwd=home, env=env, capture_output=True, text=True)
    assert (away.returncode, away.stderr) == (
        2,
        " !     no git remote 'gokku' here: add one with git remote add gokku gokku@HOST:APP\n",
    )


def test_exit_codes_and_bytes_pass_through(workstation: Workstation) -> None:
    for code in (0, 1, 42):
        assert workstation("t:exit", str(code)).code == code
    unknown = workstation("nosuch:command")
    assert unknown.code == 127 and unknown.stderr.startswith(" !     unknown command")
    assert workstation("config:get").code == 2  # the server's usage error: no KEY
    data = os.urandom(3 << 20)
    sunk = workstation("t:sink", input=data)
    assert (sunk.code, sunk.stdout.strip()) == (0, hashlib.sha256(data).hexdigest())
    assert workstation("t:bytes").out == b"\000\001\n\r\n\377"


def test_a_pty_exactly_when_stdin_and_stdout_are_terminals(workstation: Workstation) -> None:
    assert workstation("t:tty").stdout == "no tty\n"
    at = {"cwd": workstation.repo}
    both = run_in_pty(workstation.cli, "t:tty", stdin_tty=True, stdout_tty=True, **at)
    assert both.code == 0 and both.out.startswith(b"tty TERM=xterm"), both
    half = run_in_pty(workstation.cli, "t:tty", stdin_tty=True, stdout_tty=False, **at)
    assert half.out == b"no tty\n", half


# Choosing the client, and refusals: no server needed, and none may be reached.


@pytest.fixture
def repo(tmp_path: Path, base_env: dict[str, str]) -> Workstation:
    """A repository with remotes of every kind; GOKKU_SSH records that it ran."""
    project = tmp_path / "project"
    project.mkdir()
    git(project, "init", "-q")
    for name, url in REMOTES.items():
        git(project, "remote", "add", name, url)
    marker = tmp_path / "ssh-ran"
    env = {key: value for key, value in base_env.items() if key != "GOKKU_ROOT"}
    env["GOKKU_SSH"] = shlex.join([sys.executable, "-c", f"open({str(marker)!r}, 'w')"])
    return Workstation(Gokku(tmp_path / "no-state", env), project)


REMOTES = {
    "gokku": "ssh://gokku@127.0.0.1:2222/api",
    "https": "https://example.com/api.git",
    "local": "/srv/git/api.git",
    "file": "file:///srv/git/api.git",
    "port": "ssh://gokku@127.0.0.1:22x/api",
    "badapp": "gokku@127.0.0.1:Bad_App",
    "dashhost": "ssh://-oProxyCommand=id/api",
}


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--remote", "nope", "apps:list"], {}, "no git remote 'nope' here"),
        (["apps:list"], {"GOKKU_REMOTE": "nope"}, "no git remote 'nope' here"),
        (["--remote"], {}, "--remote needs the name of a git remote"),
        (["--remote", "https", "apps:list"], {}, "git remote 'https' (https://example.com/"),
        (["--remote", "local", "apps:list"], {}, "git remote 'local' (/srv/git/api.git)"),
        (["--remote", "file", "apps:list"], {}, "is not an SSH URL"),
        (["--remote", "port", "apps:list"], {}, "is not an SSH URL"),
        (["--remote", "dashhost", "apps:list"], {}, "is not an SSH URL"),
        (["--remote", "badapp", "apps:list"], {}, "git remote 'badapp': invalid app name"),
        (["--remote", "gokku"], {}, "no command given"),
        (["--remote", "gokku", "help"], {"GOKKU_SSH": "ssh 'x"}, "GOKKU_SSH: No closing"),
        (["--remote", "gokku", "help"], {"GOKKU_SSH": " "}, "GOKKU_SSH is blank"),
    ],
)
def test_a_bad_remote_is_one_line_and_runs_nothing(repo: Workstation, args, env, message) -> None:
    result = repo(*args, env=env)
    assert result.code == 2, result
    assert result.stderr.startswith(" !     ") and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
    assert result.stdout == ""
    assert not (repo.cli.root.parent / "ssh-ran").exists()


def test_an_ssh_that_cannot_run_is_one_line(repo: Workstation) -> None:
    result = repo("--remote", "gokku", "help", env={"GOKKU_SSH": "/nonexistent/ssh -v"})
    assert (result.code, result.stderr) == (
        2,
        " !     cannot run /nonexistent/ssh: No such file or directory (see GOKKU_SSH)\n",
    )


def test_the_ssh_command_line(repo: Workstation, tmp_path: Path) -> None:
    """What the client hands to ssh: -T without a terminal, the port and user from the
    URL, ``--`` before the destination, one quoted command with -a after the flags."""
    show = tmp_path / "show"
    show.write_text('#!/bin/sh\nprintf "[%s]" "$@"\n')
    show.chmod(0o755)
    env = {"GOKKU_SSH": f"{show} -v", "GOKKU_REMOTE": "gokku"}
    result = repo("--quiet", "config:set", "X=a b", env=env)
    assert result.stdout == (
        "[-v][-T][-p][2222][--][gokku@127.0.0.1][--quiet -a api config:set 'X=a b']"
    )


def test_a_gokku_remote_makes_a_client_only_where_no_state_is(
    repo: Workstation, gokku, tmp_path: Path
) -> None:
    ran = repo.cli.root.parent / "ssh-ran"
    repo = _no_default_state(repo, tmp_path / "data-home")
    # A server's CLI (GOKKU_ROOT, or the door sshd runs) stays local, whatever the remotes.
    local = repo("apps:list", env={"GOKKU_ROOT": str(gokku.root)})
    assert (local.code, local.stdout, ran.exists()) == (0, "No apps\n", False)
    door = repo("ssh-command", "--fingerprint", "SHA256:x", env={"GOKKU_REMOTE": "gokku"})
    assert door.code != 0 and not ran.exists()
    outside = repo.cli("version", cwd=repo.repo.parent)  # no repository: no remote
    assert outside.code == 0 and not ran.exists()
    assert repo("apps:list").code == 0 and ran.exists()


def test_a_usage_error_on_the_server_says_which_side_ran_it(repo: Workstation, gokku) -> None:
    """The server's own CLI in a checkout whose remote is ``gokku`` runs locally; when
    the words do not fit here, it says so and how to reach the remote instead."""
    gokku.ok("apps:create", "api")
    on_server = {"GOKKU_ROOT": str(gokku.root)}
    failed = repo("config:get", "MSG", env=on_server)
    assert failed.code == 2
    assert failed.stderr.splitlines()[1:] == [
        f"       ran on this server (GOKKU_ROOT={gokku.root}); to run it on the remote "
        "'gokku': gokku --remote gokku config:get MSG"
    ]
    elsewhere = repo.cli("config:get", "MSG", env=on_server, cwd=repo.repo.parent)
    assert elsewhere.code == 2 and elsewhere.stderr.count("\n") == 1, elsewhere.stderr
    assert repo("config:list", "api", env=on_server).stderr == ""
    assert not (repo.cli.root.parent / "ssh-ran").exists()


@pytest.mark.parametrize(
    ("argv", "sent"),
    [
        (["config:set", "K=V"], "-a api config:set K=V"),
        (["config:set", "api", "K=V"], "config:set api K=V"),
        (["config:set", "web", "--stdin"], "config:set web --stdin"),
        (["config:set", "--stdin"], "-a api config:set --stdin"),
        (["config:get", "K"], "-a api config:get K"),
        (["config:get", "--env", "prod", "web", "K"], "config:get --env prod web K"),
        (["config:unset", "K"], "-a api config:unset K"),
        (["config:unset", "web", "K", "L"], "config:unset web K L"),
        (["config:show"], "-a api config:show"),
        (["config:import", "--env=prod"], "-a api config:import --env=prod"),
        (["config:export", "web"], "config:export web"),
        (["--app", "web", "config:list"], "--app web config:list"),
        (["config:list", "-a", "web"], "config:list -a web"),
        (["services:link", "db"], "-a api services:link db"),
        (["apps:destroy", "--force"], "-a api apps:destroy --force"),
        (["apps:create", "web"], "apps:create web"),
        (["--quiet", "pg:export", "db"], "--quiet -a api pg:export db"),
        (["pg:link", "db", "web"], "-a api pg:link db web"),
        (["pg:export", "db", "-a", "web"], "pg:export db -a web"),
        (["help"], "help"),
        (["--format", "json", "apps:list"], "--format json apps:list"),
        (["plugins:add", "postgres"], "plugins:add postgres"),
        (["--version"], "--version"),
        # By the usage line's shape, not the first word: G cannot be an app's name.
        (["config:unset", "G", "H"], "-a api config:unset G H"),
        (["config:set", "MSG"], "-a api config:set MSG"),
        (["config:set", "msg"], "-a api config:set msg"),
        (["config:get", "web"], "-a api config:get web"),
        (["apps:deploys"], "-a api apps:deploys"),
        (["apps:deploys", "web"], "apps:deploys web"),
        (["apps:deploys", "--format", "json"], "-a api apps:deploys --format json"),
        (["apps:deploys", "-a", "web"], "apps:deploys -a web"),
        (["-a", "web", "apps:deploys"], "-a web apps:deploys"),
        (["apps:deploy-log"], "-a api apps:deploy-log"),
        (["apps:deploy-log", "web", "3"], "apps:deploy-log web 3"),
        # A lone word that fits the verb without an app ([N], [REV]) is not the app.
        (["apps:deploy-log", "2"], "-a api apps:deploy-log 2"),
        (["apps:deploy-log", "web"], "apps:deploy-log web"),  # N is a number: web is the app
        (["apps:deploy", "1a2b3c"], "-a api apps:deploy 1a2b3c"),
        (["apps:deploy", "web", "v1"], "apps:deploy web v1"),
        (["apps:deploy-set", "branch", "prod"], "-a api apps:deploy-set branch prod"),
        (["apps:deploy-set", "web", "wait", "5"], "apps:deploy-set web wait 5"),
    ],
)
def test_the_app_is_added_only_where_the_server_would_find_none(argv, sent) -> None:
    remote = client.Remote("gokku", "host", app="api")
    assert client.remote_command(remote, argv) == sent


def test_the_client_reads_the_command_tables_usage_lines() -> None:
    """One source: the usage line the server prints is the one the client reads, for
    every visible built-in that names an APP; and a verb outside the built-in namespaces
    is a plugin's (its commands read GOKKU_APP)."""
    takes_app = {
        verb
        for verb, builtin in BUILTINS.items()
        if not builtin.hidden and re.search(r"(?<![:\w])APP\b", builtin.usage)
    }
    assert takes_app == set(shapes.APP_USAGES)
    assert all(BUILTINS[verb].usage == usage for verb, usage in shapes.APP_USAGES.items())
    assert {verb.partition(":")[0] for verb in BUILTINS} == shapes.BUILTIN_NAMESPACES


def test_the_client_starts_no_server_code(repo: Workstation) -> None:
    """Only what the client needs is imported before ssh takes over: no asyncssh, no
    dispatcher (``-X importtime`` lists every import on stderr)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "gokku", "--remote", "gokku", "help"],
        cwd=repo.repo,
        env={**repo.cli.env, "GOKKU_SSH": "true"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert "gokku.client" in imported
    assert not {"asyncssh", "gokku.dispatcher", "gokku.plugins"} & imported


def _no_default_state(repo: Workstation, data_home: Path) -> Workstation:
    """The workstation's CLI on a machine with no default state, whatever this one has:
    root's (/opt/gokku) is behind an empty /opt in the CLI's own mount namespace, another
    user's in a fresh XDG_DATA_HOME. What the door writes there is thrown away with it."""
    prefix = ["bwrap", "--dev-bind", "/", "/", "--tmpfs", str(SYSTEM_ROOT.parent), "--"]
    env = {**repo.cli.env, "XDG_DATA_HOME": str(data_home)}
    cli = Gokku(repo.cli.root, env, prefix if os.geteuid() == 0 else [])
    return Workstation(cli, repo.repo)
