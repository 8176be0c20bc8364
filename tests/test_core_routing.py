"""Routing and the way plugin scripts run: argv, environment, streams, exit codes, signals."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, write_plugin
from sshkit import group_alive

COMMANDS = {
    "commands/help": 'echo "probe help"\n',
    "commands/args": 'printf "<%s>" "$@"; echo\n',
    "commands/exit": 'echo "exiting $1" >&2; exit "$1"\n',
    "commands/die": 'kill -"$1" $$\n',
    "commands/env": "env | sort\n",
    "commands/where": 'pwd; ps -o pgid= -p $$ | tr -d " "; echo $$\n',
    "commands/cat": "cat\n",
    "commands/hash": "sha256sum | cut -d' ' -f1\n",
    "commands/sleep": 'echo $$ > "$GOKKU_ROOT/pgid"; sleep 300 & wait\n',
    "commands/stubborn": (
        "trap '' HUP TERM\necho $$ > \"$GOKKU_ROOT/pgid\"\nwhile true; do sleep 0.1; done\n"
    ),
    "commands/trapterm": (
        "trap 'echo \"got TERM\"; exit 0' TERM\n"
        'echo ready > "$GOKKU_ROOT/ready"\n'
        "while true; do sleep 0.1; done\n"
    ),
}


@pytest.fixture
def probe(gokku, tmp_path):
    tree = write_plugin(tmp_path / "gokku-probe", namespace="pr", commands=COMMANDS)
    (tree / "plugin.yml").write_text("version: 1.2.3\ndescription: A probe for tests\n")
    gokku.ok("plugins:add", str(tree))
    return "probe"


def test_arguments_arrive_unchanged(gokku, probe):
    args = ["a b", "", "*", "$HOME", "it's", '"q"', "x\ny", "--flag", "-a", "ü"]
    result = gokku.ok("probe:args", *args)
    assert result.stdout == "".join(f"<{a}>" for a in args) + "\n"


@pytest.mark.parametrize("code", [0, 1, 42, 130, 255])
def test_exit_code_passes_through(gokku, probe, code):
    result = gokku("probe:exit", str(code))
    assert result.code == code
    assert result.stderr == f"exiting {code}\n"


@pytest.mark.parametrize(("sig", "code"), [("TERM", 143), ("KILL", 137), ("INT", 130)])
def test_script_killed_by_signal_gives_128_plus_n(gokku, probe, sig, code):
    assert gokku("probe:die", sig).code == code


def test_namespace_alias_runs_the_same_script(gokku, probe):
    assert gokku.ok("pr:args", "x").stdout == gokku.ok("probe:args", "x").stdout == "<x>\n"


def test_plugin_alone_or_help_shows_its_help(gokku, probe):
    for verb in ("probe", "probe:help", "pr", "pr:help"):
        assert gokku.ok(verb).stdout == "probe help\n"
    assert gokku.ok("help", "probe").stdout == "probe help\n"


def test_environment_is_built_from_scratch(gokku, probe):
    result = gokku.ok("probe:env", "x", env={"LEAKY_SECRET": "1", "LD_PRELOAD": "/evil.so"})
    env = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    assert "LEAKY_SECRET" not in env and "LD_PRELOAD" not in env
    assert env["GOKKU_ROOT"] == str(gokku.root)
    assert env["GOKKU_PLUGIN_NAME"] == "probe"
    assert env["GOKKU_PLUGIN_DIR"] == str(gokku.root / "plugins" / "probe")
    assert env["BASH_ENV"] == str(gokku.root / "scripts" / "plugin-helpers.sh")
    assert env["GOKKU_KEY_NAME"]  # the local user, for the CLI door
    assert env["GOKKU_COMMAND"] == "probe:env"
    assert "SERVICE_NAME" not in env and "TERM" not in env


def test_cwd_is_the_callers_and_script_leads_its_own_process_group(gokku, probe):
    cwd, pgid, pid = gokku.ok("probe:where").stdout.split()
    assert cwd == str(REPO)  # where the gokku fixture runs the CLI
    assert pgid == pid


def test_binary_stdin_and_stdout_are_byte_exact(gokku, probe):
    data = bytes(range(256)) * 4096 + b"\r\n\x00\x04 tail without newline"
    result = gokku.ok("probe:cat", input=data)
    assert result.out == data
    assert gokku.ok("probe:hash", input=data).stdout.strip() == hashlib.sha256(data).hexdigest()


def test_trace_runs_scripts_with_set_x(gokku, probe):
    result = gokku.ok("--trace", "probe:args", "x")
    assert "+ printf '<%s>' x" in result.stderr
    assert "_gokku_helpers" not in result.stderr  # the helpers do not flood the trace


def test_quiet_hides_progress_lines(gokku, probe):
    assert gokku.ok("apps:create", "loud").stderr == "-----> Created app loud\n"
    assert gokku.ok("--quiet", "apps:create", "hush").stderr == ""
    assert "GOKKU_QUIET=1" in gokku.ok("--quiet", "probe:env").stdout


def test_unknown_command_exits_127_with_did_you_mean(gokku, probe):
    result = gokku("servcies:list")
    assert result.code == 127
    assert result.stderr == (
        " !     unknown command 'servcies:list'; did you mean 'services:list'? (see: gokku help)\n"
    )
    result = gokku("pr:arsg")
    assert result.code == 127
    assert "plugin 'probe' has no command 'arsg'; did you mean 'pr:args'?" in result.stderr
    result = gokku("prboe:args")
    assert result.code == 127 and "did you mean 'probe:args'?" in result.stderr
    assert gokku("zzzzzz").code == 127


def test_help_lists_builtins_and_plugins_with_descriptions(gokku, probe):
    out = gokku.ok("help").stdout
    assert "services:create PLUGIN[:VERSION] --name SVC" in out
    assert "config:set [-a] APP KEY=VALUE...|--stdin [--encoded] [--env ENV]" in out
    assert "probe (pr): A probe for tests" in out
    assert "services:config-set" not in out  # helpers' callbacks stay hidden


def test_no_command_prints_help_and_exits_2(gokku):
    result = gokku()
    assert result.code == 2
    assert "Usage: gokku" in result.stdout


def test_version(gokku):
    from gokku import __version__

    assert gokku.ok("version").stdout == f"gokku {__version__}\n"
    assert gokku.ok("--version").stdout == f"gokku {__version__}\n"


def _gokku_process(gokku, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "gokku", *args],
        env=gokku.env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _wait_for(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text().strip()
        time.sleep(0.05)
    raise AssertionError(f"{path} never appeared")


@pytest.mark.serial  # a 5-second deadline: the machine to itself
@pytest.mark.parametrize("command", ["probe:sleep", "probe:stubborn"])
def test_hang_up_clears_the_whole_process_group_within_5_seconds(gokku, probe, command):
    proc = _gokku_process(gokku, command)
    pgid = int(_wait_for(gokku.root / "pgid"))
    assert group_alive(pgid)
    started = time.monotonic()
    proc.send_signal(signal.SIGHUP)
    proc.wait(timeout=10)
    while group_alive(pgid) and time.monotonic() - started < 6:
        time.sleep(0.05)
    assert not group_alive(pgid)
    assert time.monotonic() - started < 5
    assert proc.returncode in (128 + signal.SIGHUP, 128 + signal.SIGKILL)


def test_signals_sent_to_gokku_reach_the_script(gokku, probe):
    proc = _gokku_process(gokku, "probe:trapterm")
    _wait_for(gokku.root / "ready")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out == b"got TERM\n"


def test_a_stdin_data_command_refuses_a_terminal(gokku, tmp_path):
    import pty

    tree = write_plugin(tmp_path / "loader", commands={"commands/load": "wc -c\n"})
    (tree / "plugin.yml").write_text("commands:\n  load: {stdin: data}\n")
    gokku.ok("plugins:add", str(tree))
    assert gokku.ok("loader:load", "db", input=b"12345").stdout.strip() == "5"
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "gokku", "loader:load", "db"],
            env=gokku.env,
            cwd=REPO,
            stdin=secondary,
            capture_output=True,
            timeout=30,
        )
    finally:
        os.close(primary)
        os.close(secondary)
    assert proc.returncode == 2
    assert proc.stderr == (
        b" !     loader:load reads data from standard input: pipe it in, "
        b"e.g. gokku loader:load db < FILE\n"
    )


def test_binary_command_output_is_not_mangled_by_a_terminal(gokku, tmp_path):
    """stdout on a pty: a `stdout: binary` command switches the line discipline off."""
    import pty

    data = b"line1\nline2\n\x00\xff\n"
    body = "printf 'line1\\nline2\\n\\000\\377\\n'\n"
    tree = write_plugin(
        tmp_path / "dumper", commands={"commands/dump": body, "commands/text": body}
    )
    (tree / "plugin.yml").write_text("commands:\n  dump: {stdout: binary}\n")
    gokku.ok("plugins:add", str(tree))

    def through_pty(verb: str) -> bytes:
        primary, secondary = pty.openpty()
        proc = subprocess.Popen(
            [sys.executable, "-m", "gokku", verb],
            env=gokku.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=secondary,
            stderr=subprocess.DEVNULL,
        )
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 4096)
            except OSError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        proc.wait(timeout=30)
        os.close(primary)
        return b"".join(chunks)

    assert through_pty("dumper:text") == data.replace(b"\n", b"\r\n")  # a terminal's usual
    assert through_pty("dumper:dump") == data


@pytest.fixture
def unreachable_copy(tmp_path: Path) -> Path:
    """This gokku's code in a directory only root can enter."""
    import shutil

    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    shutil.copytree(REPO / "gokku", hidden / "gokku", ignore=shutil.ignore_patterns("__pycache__"))
    return hidden


@pytest.fixture
def nobodys_state() -> Path:
    """A state root owned by ``nobody``, in a directory it can reach."""
    import pwd
    import shutil
    import tempfile

    nobody = pwd.getpwnam("nobody")
    state = Path(tempfile.mkdtemp(prefix="gokku-owned-"))
    state.chmod(0o755)
    os.chown(state, nobody.pw_uid, nobody.pw_gid)
    yield state
    shutil.rmtree(state)


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_root_refuses_a_state_owner_that_cannot_run_this_gokku(
    base_env, unreachable_copy, nobodys_state
):
    """Root's CLI works on the state as its owner; when that user could not run this
    gokku (here its code sits in a root-only directory) it says so and changes nothing,
    instead of failing at the first import after switching."""
    proc = subprocess.run(
        [sys.executable, "-m", "gokku", "apps:create", "web"],
        env={**base_env, "GOKKU_ROOT": str(nobodys_state), "PYTHONPATH": str(unreachable_copy)},
        cwd=unreachable_copy,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    said = f" !     the state in {nobodys_state} belongs to nobody, who cannot"
    assert proc.stderr.startswith(said)
    assert proc.stderr.count("\n") == 1
    assert list(nobodys_state.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="switching users needs root")
def test_the_forced_command_door_keeps_the_user_sshd_logged_in(
    gokku, tmp_path, base_env, unreachable_copy, nobodys_state
):
    """``ssh-command --root ROOT`` run as root works on ROOT as root, whoever owns the
    state GOKKU_ROOT (or the default) would name: under sshd that is not its state."""
    key = tmp_path / "key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    gokku.ok("ssh-keys:add", "alice", f"{key}.pub", "--role", "admin")
    fingerprint = json.loads(gokku.ok("ssh-keys:list", "--format", "json").stdout)[0]["fingerprint"]
    door = ["ssh-command", "--root", str(gokku.root), "--fingerprint", fingerprint]
    proc = subprocess.run(
        [sys.executable, "-m", "gokku", *door],
        env={
            **base_env,
            "GOKKU_ROOT": str(nobodys_state),
            "PYTHONPATH": str(unreachable_copy),
            "SSH_ORIGINAL_COMMAND": "apps:create web",
        },
        cwd=unreachable_copy,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert (gokku.root / "apps" / "web").stat().st_uid == 0
    assert list(nobodys_state.iterdir()) == []
