"""Fixtures for the SSH door tests: a test plugin, registered keys, a running
``gokku serve``, a real sshd wired to ``gokku ssh-command``, and one ``Door`` interface
over both so that every scenario runs against each.

Import the fixtures into a test module with ``from sshkit import *``.
"""

import contextlib
import os
import resource
import signal
import subprocess
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import Gokku, Result, forks, write_plugin, write_settings
from sshlab import (  # noqa: F401 - re-exported for the test modules
    REPO,
    SSHD,
    KeyPair,
    family,
    free_port,
    make_key,
    running_server,
    running_sshd,
    ssh_argv,
    sshd_log,
    wait_for_port,
)

# The plugin every scenario calls: one small command per behaviour under test.
COMMANDS = {
    "args": "printf '[%s]\\n' \"$@\"\n",
    "exit": 'echo "exiting $1"\nexit "$1"\n',
    "sink": "openssl dgst -sha256 -r | cut -d' ' -f1\n",
    "source": 'cat "$1"\n',
    "errsource": 'cat "$1" >&2\n',
    "bytes": "printf '\\000\\001\\n\\r\\n\\377'\n",
    "whoami": 'echo "$GOKKU_KEY_NAME $GOKKU_KEY_FINGERPRINT"\n',
    "where": "pwd\n",
    "nofile": "ulimit -Sn\n",
    "spin": "echo ready\nwhile :; do sleep 0.1; done\n",
    # The server process that serves the session: the first ancestor of the worker (our
    # parent) running ``serve`` (its parent, or the parent of the zygote that forked it).
    "server": textwrap.dedent(
        """\
        pid=$PPID
        until [ "$pid" -le 1 ] || tr '\\0' ' ' < /proc/$pid/cmdline | grep -q ' serve '; do
          pid=$(cut -d' ' -f4 /proc/$pid/stat)
        done
        echo $pid
        """
    ),
    # The session's process (our parent, or this script itself when the zygote's child
    # became it): pid, name, its parent and that one's name, and its command line.
    "worker": textwrap.dedent(
        """\
        me=$PPID
        [ "$(cat /proc/$PPID/comm)" = gokku-zygote ] && me=$$
        up=$(cut -d' ' -f4 /proc/$me/stat)
        echo "$me $(cat /proc/$me/comm) $up $(cat /proc/$up/comm)"
        tr '\\0' ' ' < /proc/$me/cmdline
        """
    ),
    "forwarded": 'echo "agent=${SSH_AUTH_SOCK:-none} display=${DISPLAY:-none}"\n',
    "tty": textwrap.dedent(
        """\
        if [ -t 0 ]; then echo "tty TERM=$TERM size=$(stty size)"; else echo "no tty"; fi
        """
    ),
    # Records its process group, then stays busy (upload: reads; download: writes; idle).
    "hold": textwrap.dedent(
        """\
        echo $$ > "$GOKKU_ROOT/../held-$1"
        case "$1" in
          up) cat > /dev/null; sleep 300 ;;
          down) cat /dev/zero ;;
          *) echo ready; sleep 300 & wait ;;
        esac
        """
    ),
    "resize": textwrap.dedent(
        """\
        trap 'echo "size $(stty size)"' WINCH
        echo "size $(stty size)"
        while :; do sleep 0.1; done
        """
    ),
    "trap": textwrap.dedent(
        """\
        trap 'echo "got $1"; exit 7' "$1"
        echo ready
        while :; do sleep 0.1; done
        """
    ),
}
MANIFEST = (
    "commands:\n  bytes: {stdout: binary}\n  sink: {stdin: data}\n  spin: {stdout: binary}\n"
    "  whoami: {access: any}\n  logs: {access: admin}\n"
)


@pytest.fixture
def test_plugin(gokku: Gokku) -> str:
    scripts = {f"commands/{name}": body for name, body in COMMANDS.items()}
    tree = write_plugin(gokku.root.parent / "src" / "t", commands=scripts)
    (tree / "plugin.yml").write_text(MANIFEST)
    gokku.ok("plugins:add", str(tree), "--name", "t")
    return "t"


@pytest.fixture
def keydir(state_parent: Path) -> Path:
    """Beside the state root: where its owner can read the public keys."""
    folder = state_parent / "client-keys"
    folder.mkdir()
    return folder


@pytest.fixture
def alice(gokku: Gokku, keydir: Path, ssh_config: None) -> KeyPair:
    key = make_key(keydir, "alice")
    gokku.ok("ssh-keys:add", "alice", str(key.path) + ".pub", "--role", "admin")
    return key


@pytest.fixture
def ssh_settings() -> dict:
    """Extra ``ssh:`` settings; a test overrides them with
    ``@pytest.mark.parametrize("ssh_settings", [{...}])``."""
    return {}


@pytest.fixture
def ssh_config(gokku: Gokku, ssh_settings: dict) -> None:
    """gokku.yml for the tests: the forced command must find this checkout under sshd's
    empty environment. One worker unless a test asks for more: each is an interpreter and
    a zygote to start, and only the tests of several workers need a second."""
    settings = {
        "gokku_command": f"env PYTHONPATH={REPO} {gokku.python} -m gokku",
        "workers": 1,
        **ssh_settings,
    }
    write_settings(gokku.root, ssh=settings)


@dataclass
class Door:
    """Where an SSH client connects: the embedded server or sshd with the forced command."""

    kind: str
    port: int
    user: str
    key: KeyPair
    root: Path
    log: Path | None = None  # sshd's log (the OpenSSH door)

    def ssh_argv(self, *options: str, key: Path | None = None, user: str = "") -> list[str]:
        return ssh_argv(self.port, user or self.user, key or self.key.path, *options)

    def ssh(
        self,
        command: str | None,
        *options: str,
        input: bytes = b"",
        timeout: float = 60,
        **kwargs,
    ) -> Result:
        # "--": a command that starts with "-" is not for ssh's own option parser.
        argv = self.ssh_argv(*options, **kwargs) + (["--", command] if command is not None else [])
        proc = subprocess.run(argv, input=input, capture_output=True, timeout=timeout)
        said = self.server_said() if proc.returncode == 255 else ""
        return Result(proc.returncode, proc.stdout, proc.stderr, said)

    def server_said(self) -> str:
        """The end of sshd's log, for a Result that a failed assertion prints."""
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-80:])

    def audit(self) -> list[dict]:
        import json

        path = self.root / "log" / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def asyncssh_connect(port: int, key: KeyPair, **options: object):
    """An asyncssh client's connection to the server on ``port`` with ``key`` (an async
    context manager, as ``asyncssh.connect``); ``options``: asyncssh's own."""
    import asyncssh

    return asyncssh.connect(
        "127.0.0.1",
        port,
        username="gokku",
        client_keys=[str(key.path)],
        known_hosts=None,
        agent_path=None,
        **options,
    )


@pytest.fixture
def server(base_env: dict[str, str], gokku: Gokku, ssh_config: None) -> Iterator[int]:
    with running_server(base_env, python=gokku.python, forks=forks(ssh=True)) as (_, port):
        yield port


@pytest.fixture
def sshd(gokku: Gokku, tmp_path: Path, ssh_config: None) -> Iterator[int]:
    """A real OpenSSH sshd on a free loopback port whose only keys are the registry's."""
    if os.geteuid() != 0 or not os.path.exists(SSHD):
        pytest.skip("the OpenSSH door tests need root and sshd")
    authorized = gokku.root / "ssh" / "authorized_keys"
    with running_sshd(tmp_path / "sshd", authorized, login_rc=False) as (_, port):
        yield port


@pytest.fixture(params=["embedded", "openssh"])
def door(request: pytest.FixtureRequest, gokku: Gokku, alice: KeyPair, test_plugin: str) -> Door:
    if request.param == "embedded":
        port = request.getfixturevalue("server")
        return Door("embedded", port, "gokku", alice, gokku.root)
    port = request.getfixturevalue("sshd")
    import pwd

    user = pwd.getpwuid(os.geteuid()).pw_name
    return Door(
        "openssh",
        port,
        user,
        alice,
        gokku.root,
        sshd_log(request.getfixturevalue("tmp_path") / "sshd"),
    )


def _processes() -> Iterator[tuple[int, int, bytes]]:
    """(pid, process group, command line) of every live (non-zombie) process but the
    servers' zygotes, which live as long as their server (their sessions share their
    command line)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and not _is_zygote(entry):
            yield int(entry.name), int(fields[2]), cmdline


def _is_zygote(entry: Path) -> bool:
    from gokku.ssh.zygote import ZYGOTE_NAME

    try:
        return (entry / "comm").read_text().strip() == ZYGOTE_NAME
    except OSError:
        return False


def processes_under(root: Path, running: bytes = b"") -> list[int]:
    """Pids whose command line names ``root`` (workers, forced commands, plugin scripts),
    and ``running`` too when given."""
    return [
        pid
        for pid, _, cmdline in _processes()
        if str(root).encode() in cmdline and running in cmdline
    ]


def group_alive(pgid: int) -> bool:
    """Whether a process of the group still runs. A zombie runs nothing: an orphan's waits
    for the host's init to reap it, which in a container can take seconds."""
    return any(group == pgid for _, group, _ in _processes())


def kill_with_its_script(cli: subprocess.Popen) -> None:
    """SIGKILL a command and everything it started, and wait until all of it is gone: the
    plugin script runs in a process group of its own, which the command's watcher kills
    only after the command, so the command's end alone does not mean the script's (a
    lock released meanwhile would let the script go on)."""
    groups = {cli.pid}
    for pid in family(cli.pid):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    for group in groups:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
    cli.wait()
    assert wait_until(lambda: not any(map(group_alive, groups)), 30)


def runs(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie has ended, though its parent has not reaped it yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def open_files_limit(pid: int) -> tuple[int, int]:
    """(soft, hard) descriptor limit of a process, from /proc/PID/limits."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open files limit")


@contextlib.contextmanager
def soft_open_files(limit: int) -> Iterator[None]:
    """This process's soft descriptor limit lowered to ``limit`` (for a server started
    inside: it inherits it), then put back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
