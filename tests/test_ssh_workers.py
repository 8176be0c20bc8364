"""``gokku serve`` with several worker processes on one listening socket: all of them
serve, the connection caps count across them, a dead worker is replaced, and a stop
leaves nothing behind."""

import asyncio
import collections
import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys

import asyncssh
import pytest
from sshkit import *  # noqa: F403 - fixtures
from sshkit import (
    KeyPair,
    open_files_limit,
    running_server,
    soft_open_files,
    wait_for_port,
    wait_until,
)

from gokku.ssh.workers import STOP_DEADLINE_SECONDS

WORKERS = 3


def _connect(port: int, key: KeyPair) -> asyncssh.SSHClientConnection:
    return asyncssh.connect(
        "127.0.0.1", port, username="gokku", client_keys=[str(key.path)], known_hosts=None
    )


def _children(pid: int) -> set[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as listing:
        return {int(child) for child in listing.read().split()}


def _left_serving(root: str) -> list[int]:
    """The ``gokku serve`` processes of ``root`` still running: a stopped server's workers
    would be among them, whichever port it had."""
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, PermissionError):
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if b"\0gokku\0serve\0" not in cmdline.read():
                    continue
            with open(f"/proc/{pid}/environ", "rb") as environ:
                if f"GOKKU_ROOT={root}".encode() in environ.read().split(b"\0"):
                    left.append(int(pid))
    return left


def _servers(port: int, key: KeyPair, connections: int) -> set[int]:
    """The server processes that ran a session, over ``connections`` connections held open
    at the same time (so no worker can take them all one after another)."""

    async def scenario() -> set[int]:
        async with contextlib.AsyncExitStack() as stack:
            conns = await asyncio.gather(*(_connect(port, key) for _ in range(connections)))
            for conn in conns:
                stack.push_async_exit(conn)
            results = await asyncio.gather(*(conn.run("t:server") for conn in conns))
        assert {r.exit_status for r in results} == {0}
        return {int(r.stdout) for r in results}

    return asyncio.run(scenario())


def _all_serve(server: int, port: int, key: KeyPair, connections: int) -> bool:
    """Whether every worker of ``server`` serves one of ``connections`` held together. A
    worker takes connections once its zygote is ready, a while after it exists on a busy
    machine (the others serve them all meanwhile): tests wait for this, not for processes."""
    return _servers(port, key, connections) == _children(server)


@pytest.mark.parametrize("ssh_settings", [{"workers": WORKERS}])
def test_workers_share_the_socket_and_all_serve(
    base_env, ssh_config, alice: KeyPair, test_plugin
) -> None:
    with running_server(base_env) as (proc, port):
        assert wait_until(lambda: len(_children(proc.pid)) == WORKERS, 30)
        assert wait_until(lambda: _all_serve(proc.pid, port, alice, 30), 60)


@pytest.mark.parametrize("ssh_settings", [{"workers": WORKERS}])
def test_connections_spread_evenly_over_the_workers(
    base_env, ssh_config, alice: KeyPair, test_plugin
) -> None:
    """Connections opened one by one and kept open: each goes to a least busy worker."""

    async def scenario() -> collections.Counter[int]:
        served: collections.Counter[int] = collections.Counter()
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(2 * WORKERS):
                conn = await stack.enter_async_context(await _connect(port, alice))
                served[int((await conn.run("t:server", check=True)).stdout)] += 1
        return served

    with running_server(base_env) as (proc, port):
        assert wait_until(lambda: len(_children(proc.pid)) == WORKERS, 30)
        assert wait_until(lambda: _all_serve(proc.pid, port, alice, 2 * WORKERS), 60)
        served = asyncio.run(scenario())
        assert set(served) == _children(proc.pid)
        assert sorted(served.values()) == [2] * WORKERS


CAPPED = {"workers": WORKERS, "max_connections": 4, "admin_connections": 0}


@pytest.mark.parametrize("ssh_settings", [CAPPED])
def test_caps_count_across_workers(server: int, alice: KeyPair) -> None:
    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(4):
                await stack.enter_async_context(await _connect(server, alice))
            with pytest.raises((asyncssh.Error, ConnectionError)):
                async with await _connect(server, alice) as conn:
                    await conn.run("version", check=True)
        async with await _connect(server, alice):  # released again
            pass

    asyncio.run(scenario())


@pytest.mark.parametrize("ssh_settings", [{"workers": 2}])
def test_a_dead_worker_is_replaced_and_a_stop_ends_all(
    base_env, ssh_config, alice: KeyPair, test_plugin
) -> None:
    with running_server(base_env) as (proc, port):
        assert wait_until(lambda: len(_children(proc.pid)) == 2, 30)
        first = _children(proc.pid)
        os.kill(min(first), signal.SIGKILL)
        assert wait_until(lambda: len(_children(proc.pid) - first) == 1, 30)
        workers = _children(proc.pid)
        assert wait_until(lambda: _all_serve(proc.pid, port, alice, 20), 60)
        proc.terminate()
        assert proc.wait(30) == 0
    for pid in workers:
        assert not os.path.exists(f"/proc/{pid}")


@pytest.mark.parametrize("ssh_settings", [{"workers": 2}])
def test_a_stop_ends_the_server_even_when_a_worker_does_not_stop(
    base_env, ssh_config, alice: KeyPair, test_plugin
) -> None:
    """A worker that cannot act on the stop (here: stopped itself, as a wedged one) is
    killed STOP_DEADLINE_SECONDS after it: the server always ends."""
    with running_server(base_env) as (proc, _port):
        assert wait_until(lambda: len(_children(proc.pid)) == 2, 30)
        wedged = min(_children(proc.pid))
        os.kill(wedged, signal.SIGSTOP)
        proc.terminate()
        assert proc.wait(STOP_DEADLINE_SECONDS + 15) == 0
    assert wait_until(lambda: not os.path.exists(f"/proc/{wedged}"), 10)


@pytest.mark.parametrize("ssh_settings", [{"workers": 2}])
def test_the_workers_end_with_a_killed_server(base_env, ssh_config, alice: KeyPair) -> None:
    """A server killed outright (kill -9, the OOM killer) leaves no worker serving its port
    with nobody to stop it: the next server could not bind it."""
    with running_server(base_env) as (proc, port):
        assert wait_until(lambda: len(_children(proc.pid)) == 2, 30)
        workers = _children(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert wait_until(lambda: not any(os.path.exists(f"/proc/{p}") for p in workers), 30)
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, "the port is still served"


@pytest.mark.parametrize("ssh_settings", [{"workers": WORKERS}])
def test_a_stop_while_the_workers_start_ends_them_all(base_env, ssh_config) -> None:
    """A stop that comes as the server starts (a service manager restarting it at once)
    reaches every worker, the ones forked after it too: none is left running with its
    server waiting on it. The moment is a race, so the server is stopped as it starts ten
    times over."""
    for _ in range(10):
        with running_server(base_env) as (proc, port):
            proc.terminate()
            assert proc.wait(STOP_DEADLINE_SECONDS / 2) == 0
        assert _left_serving(base_env["GOKKU_ROOT"]) == []


@pytest.mark.parametrize("ssh_settings", [{"workers": WORKERS}, {"workers": 1}])
def test_a_stop_as_the_port_opens_ends_the_server_cleanly(base_env, ssh_config) -> None:
    """The moment the port opens, before any handler is in place: strace holds the server
    there for a few seconds (its listen() returns late), the stop comes meanwhile, and
    the server must still stop as asked (exit 0, no worker left) rather than die of it;
    with one worker too, which is the server itself."""
    argv = [sys.executable, "-P", "-m", "gokku", "serve", "--port", "0"]
    held = ["strace", "-qq", "-o", "/dev/null", "-e", "trace=listen"]
    proc = subprocess.Popen(
        [*held, "-e", "inject=listen:delay_exit=3000000", *argv],
        env=base_env,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(proc)
        (server,) = _children(proc.pid)
        os.kill(server, signal.SIGTERM)
        # strace ends as its command did: 0, or killed by the same signal.
        assert proc.wait(STOP_DEADLINE_SECONDS) == 0
    finally:
        proc.kill()
        proc.wait()
    assert _left_serving(base_env["GOKKU_ROOT"]) == []


def test_the_server_raises_its_descriptor_limit_to_the_hard_one(base_env, ssh_config) -> None:
    """Started from a shell's 1024 (here: 256), it takes all the administrator allows."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 256:
        pytest.skip("the hard limit is too low to see a raise")
    with contextlib.ExitStack() as stack:
        with soft_open_files(256):
            proc, _ = stack.enter_context(running_server(base_env))
        assert open_files_limit(proc.pid) == (hard, hard)
        assert wait_until(lambda: _children(proc.pid), 10)
        for worker in _children(proc.pid):
            assert open_files_limit(worker) == (hard, hard)
