"""Sessions of the embedded server are forked by its zygote, a process that imported the
dispatch path once: no new interpreter per session, nothing kept from one session to the
next, and a zygote that dies is replaced while sessions go on."""

import asyncio
import contextlib
import fcntl
import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncssh
import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import (
    Door,
    KeyPair,
    group_alive,
    open_files_limit,
    running_server,
    runs,
    soft_open_files,
    wait_until,
)

from gokku.ssh.spawn import LOST_STATUS, PING_SECONDS, READY_SECONDS, SILENT_SECONDS
from gokku.ssh.zygote import ZYGOTE_NAME

pytestmark = pytest.mark.parametrize("ssh_settings", [{"workers": 1}])
# A stopped zygote is killed SILENT_SECONDS after a ping it did not answer, sent at most
# PING_SECONDS after it stopped; the rest is the server reaping it and this test seeing it.
NOTICED_SECONDS = SILENT_SECONDS + PING_SECONDS + 0.5


def _worker(door: Door) -> tuple[int, str, int, str, str]:
    """The session's process: pid, name, parent, parent's name, command line."""
    result = door.ssh("t:worker")
    assert result.code == 0, result.stderr
    first, cmdline = result.stdout.splitlines()
    pid, name, parent, parent_name = first.split()
    return int(pid), name, int(parent), parent_name, cmdline


def _zygote(server: int) -> int | None:
    with open(f"/proc/{server}/task/{server}/children") as listing:
        children = [int(pid) for pid in listing.read().split()]
    named = [
        pid for pid in children if Path(f"/proc/{pid}/comm").read_text().strip() == ZYGOTE_NAME
    ]
    return named[0] if named else None


def _forked_by_a_new_zygote(door: Door, server: int, old: int) -> bool:
    """Whether a session now is forked by a zygote other than ``old``. A replacement
    exists (and has its name) before it has imported what sessions run; until it says it
    is ready, sessions start an interpreter: wait for this, not for the process."""
    _, _, parent, _, _ = _worker(door)
    return parent == _zygote(server) and parent not in (None, old)


def _connect(door: Door) -> asyncssh.SSHClientConnection:
    return asyncssh.connect(
        "127.0.0.1", door.port, username="gokku", client_keys=[str(door.key.path)], known_hosts=None
    )


def _fds(pid: int) -> dict[str, str]:
    return {link.name: os.readlink(link) for link in Path(f"/proc/{pid}/fd").iterdir()}


class Embedded(Door):
    server: int  # the server's pid


@pytest.fixture
def embedded(gokku, base_env, ssh_config, alice: KeyPair, test_plugin) -> Iterator[Embedded]:
    with running_server(base_env) as (proc, port):
        door = Embedded("embedded", port, "gokku", alice, gokku.root)
        door.server = proc.pid
        # It listens at once; it takes connections once its zygote is ready.
        assert wait_until(lambda: _zygote(proc.pid), 10)
        yield door


def test_sessions_are_forks_of_the_zygote_not_new_interpreters(embedded: Embedded) -> None:
    """And a plugin command's session is its script itself: no Python process is left
    between the server and the script (``gokku.ssh.handover``)."""
    zygote = _zygote(embedded.server)
    assert zygote is not None
    seen = set()
    for _ in range(3):
        pid, name, parent, parent_name, cmdline = _worker(embedded)
        assert (name, parent, parent_name) == ("bash", zygote, ZYGOTE_NAME)
        assert cmdline.startswith("bash ") and cmdline.split()[1].endswith("/commands/worker")
        seen.add(pid)
    assert len(seen) == 3  # a fresh process each time


def test_the_zygote_keeps_nothing_of_a_session(embedded: Embedded) -> None:
    """Its descriptors are the same after sessions as before (every session's were
    closed), and a session without a command does not find the previous one's."""
    zygote = _zygote(embedded.server)
    assert embedded.ssh("version").code == 0  # it takes requests: it is all set up
    before = _fds(zygote)
    assert embedded.ssh("t:args leaked", "-tt").stdout.strip() == "[leaked]"
    bare = embedded.ssh(None, "-T")
    assert bare.code == 2 and "leaked" not in bare.stdout + bare.stderr
    assert embedded.ssh("t:sink", input=b"x" * 100000).code == 0
    assert _fds(zygote) == before


def test_a_killed_zygote_is_replaced_and_sessions_go_on(embedded: Embedded) -> None:
    first = _zygote(embedded.server)
    os.kill(first, signal.SIGKILL)
    assert wait_until(lambda: not os.path.exists(f"/proc/{first}/comm"), 30)
    _, _, parent, _, _ = _worker(embedded)  # meanwhile: a new interpreter, or the new zygote
    assert parent in (embedded.server, _zygote(embedded.server))
    assert wait_until(lambda: _forked_by_a_new_zygote(embedded, embedded.server, first), 30)


def test_a_session_outlives_its_zygote(embedded: Embedded) -> None:
    """Signals still reach the session's process (through its pidfd) and the session
    ends; its exit code died with the zygote, its audit line did not."""

    async def scenario() -> asyncssh.SSHCompletedProcess:
        async with _connect(embedded) as conn:
            process = await conn.create_process("t:trap TERM")
            assert await process.stdout.readline() == "ready\n"
            os.kill(_zygote(embedded.server), signal.SIGKILL)
            await asyncio.sleep(0.3)
            process.send_signal("TERM")
            return await asyncio.wait_for(process.wait(), 15)

    result = asyncio.run(scenario())
    assert "got TERM" in result.stdout
    assert result.exit_status == LOST_STATUS
    lines = [e for e in embedded.audit() if e["argv"] == ["t:trap", "TERM"]]
    assert [e["exit"] for e in lines] == [LOST_STATUS]  # its one line, as the client saw it


# Stops ZYGOTE (argv[1]) as soon as it has a child not in argv[2:], at rest in its wait
# for events (x86-64's epoll_wait or epoll_pwait: its answer with the pid went out). A
# process of its own, polling without pause: a thread of the test would wait for the
# interpreter lock while the session (some milliseconds of Python) hands its command over.
# A zygote gone meanwhile (the worker kills one silent for 1.5 s) is stopped enough.
STOP_AT_REST = """
import os, signal, sys, time
zygote, before = int(sys.argv[1]), set(sys.argv[2:])
listing = f"/proc/{zygote}/task/{zygote}/children"
deadline = time.monotonic() + 30
print("polling", flush=True)
try:
    while not set(open(listing).read().split()) - before:
        assert time.monotonic() < deadline, "the zygote forked no session"
    while True:
        os.kill(zygote, signal.SIGSTOP)
        while open(f"/proc/{zygote}/stat").read().rsplit(")", 1)[1].split()[0] != "T":
            assert time.monotonic() < deadline, "the zygote did not stop"
        if open(f"/proc/{zygote}/syscall").read().split()[0] in ("232", "281"):
            break
        os.kill(zygote, signal.SIGCONT)
        assert time.monotonic() < deadline, "the zygote never came to rest"
except (FileNotFoundError, ProcessLookupError):
    pass
"""


def test_a_hand_over_the_zygote_never_saw_still_reaches_the_worker(embedded: Embedded) -> None:
    """The session's line is the worker's to read: stopped before the session hands its
    command over, then killed while the script runs, the zygote takes nothing of it with
    it. The audit line is written (it was lost when the zygote passed hand-overs on)."""
    if os.uname().machine != "x86_64":
        pytest.skip("the stopper knows x86-64's numbers of the zygote's wait")
    zygote = _zygote(embedded.server)
    assert zygote is not None
    before = Path(f"/proc/{zygote}/task/{zygote}/children").read_text().split()

    async def scenario() -> asyncssh.SSHCompletedProcess:
        async with _connect(embedded) as conn:
            stopper = await asyncio.create_subprocess_exec(
                sys.executable, "-c", STOP_AT_REST, str(zygote), *before, stdout=subprocess.PIPE
            )
            assert await stopper.stdout.readline() == b"polling\n"
            process = await conn.create_process("t:trap TERM")
            assert await asyncio.wait_for(stopper.wait(), 60) == 0
            assert await process.stdout.readline() == "ready\n"
            with contextlib.suppress(ProcessLookupError):  # or the worker did, silent 1.5 s
                os.kill(zygote, signal.SIGKILL)
            process.send_signal("TERM")
            return await asyncio.wait_for(process.wait(), 15)

    try:
        result = asyncio.run(scenario())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(zygote, signal.SIGKILL)
    assert "got TERM" in result.stdout
    assert result.exit_status == LOST_STATUS
    lines = [e for e in embedded.audit() if e["argv"] == ["t:trap", "TERM"]]
    assert [e["exit"] for e in lines] == [LOST_STATUS]


def test_a_hung_up_session_outlives_its_zygote(embedded: Embedded) -> None:
    client = subprocess.Popen(embedded.ssh_argv() + ["t:hold idle"], stdout=subprocess.PIPE)
    assert client.stdout.readline() == b"ready\n"
    pgid = int((embedded.root.parent / "held-idle").read_text())
    os.kill(_zygote(embedded.server), signal.SIGKILL)
    client.kill()
    client.wait()
    client.stdout.close()
    assert wait_until(lambda: not group_alive(pgid), 5)


def test_a_script_does_not_outlive_the_server_worker_that_held_its_locks(
    embedded: Embedded,
) -> None:
    """A session that became its script (``gokku.ssh.handover``) left its locks and its
    audit line to the worker: when the worker is killed, the zygote hangs the script's
    group up before it goes, as the worker would have when the client went away."""
    client = subprocess.Popen(embedded.ssh_argv() + ["t:hold idle"], stdout=subprocess.PIPE)
    try:
        assert client.stdout.readline() == b"ready\n"
        pgid = int((embedded.root.parent / "held-idle").read_text())
        assert Path(f"/proc/{pgid}/comm").read_text().strip() == "bash"  # no Python between
        os.kill(embedded.server, signal.SIGKILL)
        assert wait_until(lambda: not group_alive(pgid), 10), "the script ran on"
    finally:
        client.kill()
        client.wait()
        client.stdout.close()


# services:start runs this under the service's lock: it says where its group is, then waits.
HOLD_START = """\
echo $$ > "$GOKKU_ROOT/../held-start"
echo ready
sleep 300 & wait
"""


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return [int(child) for child in listing.read().split()]


def _waits_on(pid: int, path: Path) -> bool:
    """Whether ``pid`` has ``path`` open (a session waiting for the lock on it)."""
    with contextlib.suppress(OSError):
        return str(path) in _fds(pid).values()
    return False


def test_a_script_is_hung_up_when_its_worker_goes_before_the_zygote_saw_it_start(
    gokku: Gokku, embedded: Embedded, tmp_path: Path
) -> None:
    """The zygote learns that a session became its script from the end of the session's
    line; the worker's going can come in the same wake-up, before it or after it. Here the
    zygote is stopped while the session waits for its lock, so it sees both only once the
    script runs and the worker is dead: in either order, the script is hung up (it ran on
    when the worker's end came first, and the zygote died passing the hand-over on to the
    dead worker when the line came first)."""
    tree = write_plugin(tmp_path / "src" / "d", commands={"commands/start": HOLD_START})
    gokku.ok("plugins:add", str(tree), "--name", "d")
    gokku.ok("services:create", "d", "--name", "s1")
    lock = embedded.root / "locks" / "service-s1.lock"
    zygote = _zygote(embedded.server)
    assert zygote is not None
    held = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX)
    client = subprocess.Popen(embedded.ssh_argv() + ["services:start s1"], stdout=subprocess.PIPE)
    try:
        assert wait_until(lambda: any(_waits_on(p, lock) for p in _children(zygote)), 30)
        os.kill(zygote, signal.SIGSTOP)
        os.close(held)
        assert client.stdout.readline() == b"ready\n"
        pgid = int((embedded.root.parent / "held-start").read_text())
        os.kill(embedded.server, signal.SIGKILL)
        assert wait_until(lambda: not runs(embedded.server), 10)  # its end is closed
        os.kill(zygote, signal.SIGCONT)
        assert wait_until(lambda: not group_alive(pgid), 10), "the script ran on"
    finally:
        with contextlib.suppress(OSError):
            os.close(held)
        with contextlib.suppress(ProcessLookupError):
            os.kill(zygote, signal.SIGCONT)
        client.kill()
        client.wait()
        client.stdout.close()


def test_a_stopped_zygote_is_replaced_and_the_waiting_session_told(embedded: Embedded) -> None:
    """A zygote that takes a request and never answers (here: stopped) would hold every
    new session: after SILENT_SECONDS it is killed, the waiting session fails with a
    message (it may have been forked: it is not started twice), and the next one runs.
    Logged in before the stop, so that the request reaches the zygote before it is noticed."""

    async def scenario() -> tuple[int, asyncssh.SSHCompletedProcess, float]:
        async with _connect(embedded) as conn:
            assert (await conn.run("version")).exit_status == 0  # it takes requests
            stuck = _zygote(embedded.server)
            os.kill(stuck, signal.SIGSTOP)
            started = time.monotonic()
            waited = await conn.run("t:args one")
            return stuck, waited, time.monotonic() - started

    stuck, waited, took = asyncio.run(scenario())
    assert took < NOTICED_SECONDS + 5
    assert waited.exit_status != 0
    assert "session runner failed while starting it" in waited.stderr
    assert len(waited.stderr.strip().splitlines()) == 1
    assert wait_until(lambda: not os.path.exists(f"/proc/{stuck}/comm"), 30)
    assert embedded.ssh("t:args two").stdout == "[two]\n"
    assert wait_until(lambda: _forked_by_a_new_zygote(embedded, embedded.server, stuck), 30)


def test_a_stopped_zygote_is_noticed_with_no_session_waiting(embedded: Embedded) -> None:
    """Nothing asks it anything, yet it is killed within 2 s and replaced."""
    assert embedded.ssh("version").code == 0  # it takes requests
    stuck = _zygote(embedded.server)
    os.kill(stuck, signal.SIGSTOP)
    started = time.monotonic()
    assert wait_until(lambda: not os.path.exists(f"/proc/{stuck}/comm"), 30)
    assert time.monotonic() - started < NOTICED_SECONDS
    assert wait_until(lambda: _forked_by_a_new_zygote(embedded, embedded.server, stuck), 30)


def test_a_stopped_zygote_does_not_hold_a_running_session(embedded: Embedded) -> None:
    """The session's command ends while its zygote is stopped (so its exit code never
    comes): the client gets its status within 2 s of the stop, not when a timeout ends."""

    async def scenario() -> tuple[asyncssh.SSHCompletedProcess, float]:
        async with _connect(embedded) as conn:
            process = await conn.create_process("t:trap TERM")
            assert await process.stdout.readline() == "ready\n"
            os.kill(_zygote(embedded.server), signal.SIGSTOP)
            started = time.monotonic()
            process.send_signal("TERM")
            result = await asyncio.wait_for(process.wait(), 30)
            return result, time.monotonic() - started

    result, took = asyncio.run(scenario())
    assert "got TERM" in result.stdout
    assert result.exit_status == LOST_STATUS
    assert took < NOTICED_SECONDS


# Python imports ``sitecustomize`` from PYTHONPATH at start: this one stops the first
# zygote in its tracks, before it could say it is ready (as a hung import would).
STOP_FIRST_ZYGOTE = """\
import os, signal
from pathlib import Path
marker = Path(__file__).with_name("stopped-once")
if b"gokku.ssh.zygote" in Path("/proc/self/cmdline").read_bytes() and not marker.exists():
    # Whole or not at all: the test reads the pid as soon as the name is there.
    marker.with_suffix(".new").write_text(str(os.getpid()))
    marker.with_suffix(".new").rename(marker)
    os.kill(os.getpid(), signal.SIGSTOP)
"""


def _hooked(tmp_path: Path, base_env: dict[str, str], code: str) -> tuple[Path, dict[str, str]]:
    """A folder whose ``sitecustomize.py`` is ``code``, and an environment in which every
    interpreter the server starts runs it first."""
    hook = tmp_path / "site"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(code)
    return hook, {**base_env, "PYTHONPATH": f"{hook}:{base_env['PYTHONPATH']}"}


def test_a_zygote_never_ready_is_replaced(
    gokku, base_env, ssh_config, alice: KeyPair, test_plugin, tmp_path: Path
) -> None:
    """Sessions go the slow way while it is not ready; after READY_SECONDS it is killed
    and the next zygote forks them."""
    hook, env = _hooked(tmp_path, base_env, STOP_FIRST_ZYGOTE)
    with running_server(env) as (proc, port):
        door = Door("embedded", port, "gokku", alice, gokku.root)
        assert wait_until(lambda: (hook / "stopped-once").exists(), 10)
        stuck = int((hook / "stopped-once").read_text())
        assert door.ssh("t:args early").stdout == "[early]\n"
        assert wait_until(lambda: not os.path.exists(f"/proc/{stuck}/comm"), READY_SECONDS + 30)
        assert wait_until(lambda: _forked_by_a_new_zygote(door, proc.pid, stuck), 30)


# The first fork of the first zygote: three silences' worth of CPU spent first, answering
# nothing meanwhile (a burst of forks on a starved host looks the same from outside).
SPIN_FIRST_FORK = f"""\
import os, time
from pathlib import Path
if b"gokku.ssh.zygote" in Path("/proc/self/cmdline").read_bytes():
    real_fork = os.fork
    def fork():
        marker = Path(__file__).with_name("spun")
        if not marker.exists():
            marker.write_text(str(os.getpid()))
            end = time.monotonic() + {3 * SILENT_SECONDS}
            while time.monotonic() < end:
                pass
        return real_fork()
    os.fork = fork
"""


def test_a_zygote_silent_but_busy_is_waited_for(
    gokku, base_env, ssh_config, alice: KeyPair, test_plugin, tmp_path: Path
) -> None:
    """Killed as stuck, a zygote that was only busy took the sessions it had forked with
    it (seen once: one of 50 sessions at once ended with status 1 and no output). One
    that still gets the CPU is waited for (up to BUSY_SECONDS): the session runs."""
    hook, env = _hooked(tmp_path, base_env, SPIN_FIRST_FORK)
    with running_server(env) as (proc, port):
        door = Door("embedded", port, "gokku", alice, gokku.root)
        result = door.ssh("t:args busy")
        assert (result.code, result.stdout) == (0, "[busy]\n"), result.stderr
        assert int((hook / "spun").read_text()) == _zygote(proc.pid)  # the same one


def test_sessions_get_the_descriptor_limit_the_server_started_with(
    gokku, base_env, ssh_config, alice: KeyPair, test_plugin
) -> None:
    """The server takes the hard limit for its connections; the commands it runs, forked
    by the zygote or (while it is replaced) exec'd, start with the soft limit it had."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    lowered = hard // 2
    with contextlib.ExitStack() as stack:
        with soft_open_files(lowered):
            proc, port = stack.enter_context(running_server(base_env))
        door = Door("embedded", port, "gokku", alice, gokku.root)
        assert wait_until(lambda: _zygote(proc.pid), 10)
        assert open_files_limit(proc.pid) == (hard, hard)
        assert open_files_limit(_zygote(proc.pid)) == (hard, hard)
        assert door.ssh("t:nofile").stdout == f"{lowered}\n"
        killed = _zygote(proc.pid)
        os.kill(killed, signal.SIGKILL)  # the next session may be exec'd
        # Once it is dead its socket is closed, and a request fails to reach it: the
        # session is exec'd. One sent before it died fails instead ("failed while starting
        # it"): it may have been forked, so the worker never runs it twice.
        assert wait_until(lambda: not runs(killed), 10)
        assert door.ssh("t:nofile").stdout == f"{lowered}\n"


def test_sessions_ending_together_never_take_the_zygote_down(embedded: Embedded) -> None:
    """Fifty sessions at once, four times over: their exits land in the zygote's same
    wake-ups, their hand-overs in the worker's, and none may take the zygote down (when it
    passed the hand-overs on, it died on a closed line about one round in ten, failing the
    sessions it was starting)."""
    import concurrent.futures

    from sshlab import server_log

    zygote = _zygote(embedded.server)

    def one(index: int) -> tuple[int, str]:
        result = embedded.ssh(f"t:args session-{index}", timeout=120)
        return result.code, result.stdout + result.stderr

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        for _ in range(4):
            results = list(pool.map(one, range(50)))
            assert results == [(0, f"[session-{i}]\n") for i in range(50)]
    assert _zygote(embedded.server) == zygote
    assert "session runner died" not in server_log(embedded.root).read_text()
