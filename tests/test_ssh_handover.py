"""What a session keeps when its process becomes the plugin's script (the embedded
server, ``gokku.ssh.handover``), and what the OpenSSH door keeps with Python waiting: one
audit line with the script's exit even when someone else kills it, and the command's
locks held exactly as long as the script runs, never by a daemon it starts."""

import asyncio
import contextlib
import fcntl
import os
import signal
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, processes_under, runs, wait_until

# services:start runs this under the service's lock. It starts a daemon (its own session,
# as pg_ctl start would), says where both are, and waits to be told to end.
START = """\
setsid sleep 300 < /dev/null > /dev/null 2>&1 &
echo "$! $$" > "$GOKKU_ROOT/../started"
until [ -e "$GOKKU_ROOT/../go" ]; do sleep 0.05; done
"""


@pytest.fixture
def daemonizing(gokku: Gokku, tmp_path: Path) -> str:
    tree = write_plugin(tmp_path / "src" / "d", commands={"commands/start": START})
    gokku.ok("plugins:add", str(tree), "--name", "d")
    gokku.ok("services:create", "d", "--name", "s1")
    return "s1"


def _locked(path: Path) -> bool:
    """Whether someone holds the flock on ``path`` (we try it, as a waiting command does)."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _holds(pid: int, path: Path) -> bool:
    """Whether process ``pid`` has ``path`` open."""
    folder = Path(f"/proc/{pid}/fd")
    return any(os.readlink(fd) == str(path) for fd in folder.iterdir())


def _own_processes(pids: list[int]) -> list[int]:
    """Those of ``pids`` whose parent is not among them: a script's bash forks for each
    command it runs, and the child bears the script's command line until it execs."""

    def parent(pid: int) -> int:
        try:
            return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except OSError:
            return 0

    return [pid for pid in pids if parent(pid) not in pids]


def test_a_script_killed_by_someone_else_gets_one_line_with_its_exit(door: Door) -> None:
    client = subprocess.Popen(door.ssh_argv() + ["t:spin"], stdout=subprocess.PIPE)
    try:
        assert client.stdout.readline() == b"ready\n"
        scripts = _own_processes(processes_under(door.root, b"commands/spin"))
        assert len(scripts) == 1, scripts
        os.kill(scripts[0], signal.SIGKILL)
        assert client.wait(30) == 128 + signal.SIGKILL
    finally:
        client.kill()
        client.wait()
        client.stdout.close()
    assert wait_until(lambda: [e for e in door.audit() if e["argv"] == ["t:spin"]], 10)
    lines = [e for e in door.audit() if e["argv"] == ["t:spin"]]
    assert [(e["key"], e["exit"]) for e in lines] == [("alice", 128 + signal.SIGKILL)]
    assert lines[0]["duration"] > 0


def test_the_locks_are_held_while_the_script_runs_and_not_by_its_daemon(
    door: Door, daemonizing: str
) -> None:
    lock = door.root / "locks" / f"service-{daemonizing}.lock"
    started, go = door.root.parent / "started", door.root.parent / "go"
    client = subprocess.Popen(door.ssh_argv() + [f"services:start {daemonizing}"])
    daemon = 0
    try:
        assert wait_until(lambda: started.exists() and started.read_text().strip(), 30)
        daemon, script = (int(word) for word in started.read_text().split())
        assert _locked(lock)
        # Its holder is the script (or the command waiting for it): a call back into gokku
        # from the script passes through, as from one of its descendants.
        holder = int(lock.read_text().split()[1])
        assert holder in (script, int(Path(f"/proc/{script}/stat").read_text().split()[3]))
        assert not _holds(daemon, lock)
        go.touch()
        assert client.wait(30) == 0
        assert os.path.exists(f"/proc/{daemon}")  # the daemon runs on
        assert wait_until(lambda: not _locked(lock), 5), "the lock outlived the script"
        assert lock.read_text() == ""  # nobody named as holding it
    finally:
        go.touch()
        client.kill()
        client.wait()
        if daemon:
            os.kill(daemon, signal.SIGKILL)


def test_a_hang_up_before_the_worker_learns_of_the_exec_still_clears_the_group() -> None:
    """What a session hands over waits on its line until the worker reads it, which a
    busy worker may do after the script runs: the client can be gone before the worker
    learns that the session became its script. The hang-up then reached only the
    script's leader; once the worker learns it, the whole group goes (the background
    ``sleep`` here). The order is reproduced exactly: the script, leading its own session
    as a forked session does, dies unreaped; the hand-over message is read; only then
    would its exit."""
    from gokku.ssh.spawn import Forked

    script = subprocess.Popen(
        ["bash", "-c", "sleep 300 & echo $!; wait"], stdout=subprocess.PIPE, start_new_session=True
    )
    sleeper = int(script.stdout.readline())

    async def scenario() -> None:
        line, _said = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        forked = Forked(script.pid, os.pidfd_open(script.pid), line.detach())
        forked.send_signal(signal.SIGHUP)  # the client went away; the exec is not known yet
        assert wait_until(lambda: not runs(script.pid), 10)
        assert runs(sleeper)
        forked.handed_over({"exec": True}, [])
        assert wait_until(lambda: not runs(sleeper), 10), "the script's group ran on"

    try:
        asyncio.run(scenario())
    finally:
        script.wait()
        script.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(sleeper, signal.SIGKILL)
