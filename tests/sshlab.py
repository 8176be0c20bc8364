"""Loopback SSH set-ups shared by the test fixtures (``sshkit``) and the benchmarks
(``bench/``): client keys, a real ``gokku serve``, a real OpenSSH sshd, the ssh client's
argv. No pytest here, so that a benchmark script can import it.
"""

import contextlib
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SSHD = "/usr/sbin/sshd"


@dataclass
class KeyPair:
    path: Path
    public: str


def make_key(folder: Path, name: str) -> KeyPair:
    path = folder / name
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True
    )
    return KeyPair(path, (folder / f"{name}.pub").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(proc: subprocess.Popen, port: int = 0, timeout: float = 15) -> int:
    """Wait until ``proc`` (or a process it started) listens on ``port``, or on a port of
    its choosing when ``port`` is 0 (``gokku serve --port 0``), and return that port.
    That a connection succeeds is not enough: a port ``free_port`` gave out can be another
    test's server's by then, and a test that stops ``proc`` "once it listens" would stop
    it before it has even bound."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        held = _sockets(family(proc.pid))
        ports = {found for inode, found in _listeners().items() if inode in held}
        if port in ports or (not port and ports):
            return port or min(ports)
        time.sleep(0.05)
    raise RuntimeError(f"{proc.pid} does not listen on port {port or 'any'}")


def _listeners() -> dict[str, int]:
    """The TCP sockets listening (state 0A in /proc/net/tcp*): inode to port."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if fields[3] == "0A":
                    found[fields[9]] = int(fields[1].rsplit(":", 1)[1], 16)
    return found


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (those alive now)."""
    family, i = [pid], 0
    while i < len(family):
        listing = f"/proc/{family[i]}/task/{family[i]}/children"
        with contextlib.suppress(FileNotFoundError), open(listing) as children:
            family.extend(int(child) for child in children.read().split())
        i += 1
    return family


def _sockets(pids: list[int]) -> set[str]:
    """The inodes of the sockets the processes ``pids`` hold open."""
    inodes = set()
    for pid in pids:
        with contextlib.suppress(FileNotFoundError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(FileNotFoundError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inodes.add(target[8:-1])
    return inodes


def ssh_argv(port: int, user: str, key: Path, *options: str) -> list[str]:
    """The OpenSSH client, non-interactive, trusting the throwaway host key."""
    return [
        "ssh",
        "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null",
        "-o", "IdentitiesOnly=yes",
        "-o", "BatchMode=yes",
        "-o", "LogLevel=ERROR",
        "-i", str(key),
        "-p", str(port),
        *options,
        f"{user}@127.0.0.1",
    ]  # fmt: skip


@contextlib.contextmanager
def stopping(proc: subprocess.Popen, timeout: float = 15) -> Iterator[subprocess.Popen]:
    """Yield ``proc``; SIGTERM it at the end, SIGKILL if it does not go."""
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_server(
    env: dict[str, str], cwd: Path = REPO, python: str = sys.executable, forks=None
) -> Iterator[tuple[subprocess.Popen, int]]:
    """A real ``gokku serve`` on a loopback port of its choosing, stopped with SIGTERM at
    the end.
    Started as the installed command starts it: the working directory not on sys.path;
    or forked by ``forks`` (``cliforks.Forks``, with the server's modules imported), when
    given one whose interpreter starts as this one would. Its log (stderr) goes to
    ``serve.log`` beside the root (``server_log``)."""
    argv = ["serve", "--port", "0"]
    with open(server_log(env["GOKKU_ROOT"]), "ab") as log:
        if forks is not None and forks.suits(env, python):
            proc = forks.start(argv, env, cwd, log.fileno())
        else:
            proc = subprocess.Popen(
                [python, "-P", "-m", "gokku", *argv],
                env=env,
                cwd=cwd,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
    with stopping(proc):
        yield proc, wait_for_port(proc)


def server_log(root: str | Path) -> Path:
    """Where ``running_server`` writes the log of the server of ``root``: what it warned
    of (a replaced zygote, a refused connection) explains a failed session."""
    return Path(root).parent / "serve.log"


def sshd_log(folder: Path) -> Path:
    """Where ``running_sshd`` writes the log of the sshd whose config is in ``folder``."""
    return folder / "sshd.log"


@contextlib.contextmanager
def running_sshd(
    folder: Path,
    *authorized_keys: Path,
    root_login: str = "forced-commands-only",
    login_rc: bool = True,
) -> Iterator[tuple[subprocess.Popen, int]]:
    """A real OpenSSH sshd (run as root) on a free loopback port, its config and host key
    in ``folder``, accepting only the keys in the ``authorized_keys`` files.

    ``login_rc=False``: the login user's bash runs commands at shell level 2 (SHLVL=1),
    where it reads no ~/.bashrc (at level 1 it would, being run by sshd). Gokku's user has
    none, but root's may do anything: a version manager's shim rehash there raced the
    parallel tests' other logins and wrote on their stderr.

    sshd logs each connection and session (VERBOSE) to ``sshd_log(folder)``: a session the
    client saw end without its exit status (255) is explained there, if anywhere. (Not
    DEBUG: the session's process logs to its stderr, which is the client's.)

    Key exchange is curve25519, as with the embedded server (asyncssh offers no
    sntrup761x25519). OpenSSH's default post-quantum exchange costs the client about 80 ms
    of CPU per connection here, a third of an OpenSSH-door session, and the suite makes
    hundreds of them; no door behaviour under test depends on the key exchange."""
    folder.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / "host_key")], check=True
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    for attempt in range(3):
        # sshd takes no port 0, and a port free_port gave out can be another test's
        # server's by the time sshd binds it: sshd then ends, and gets another.
        port = free_port()
        config = _sshd_config(folder, port, authorized_keys, root_login, login_rc)
        with open(sshd_log(folder), "ab") as log:
            start = log.tell()
            proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=log)
        try:
            wait_for_port(proc, port)
            break
        except RuntimeError:
            proc.kill()
            proc.wait()
            taken = b"Cannot bind any address" in sshd_log(folder).read_bytes()[start:]
            if not taken or attempt == 2:
                raise
    with stopping(proc, timeout=10):
        yield proc, port


def _sshd_config(
    folder: Path, port: int, authorized_keys: tuple[Path, ...], root_login: str, login_rc: bool
) -> Path:
    config = folder / "sshd_config"
    config.write_text(
        textwrap.dedent(
            f"""\
            ListenAddress 127.0.0.1
            Port {port}
            HostKey {folder / "host_key"}
            AuthorizedKeysFile {" ".join(map(str, authorized_keys))}
            PidFile none
            StrictModes no
            UsePAM no
            PermitRootLogin {root_login}
            PubkeyAuthentication yes
            PasswordAuthentication no
            KbdInteractiveAuthentication no
            LogLevel VERBOSE
            MaxStartups 1000
            KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org
            """
        )
        + ("" if login_rc else "SetEnv SHLVL=1\n")
    )
    return config
