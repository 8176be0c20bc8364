"""Support for the bundled plugins' tests (real PostgreSQL and Redis servers).

Two things make these tests different from the rest of the suite:

- The servers run as the unprivileged ``postgres``/``redis`` users when the tests run as
  root, and those users cannot enter pytest's private temp directories (mode 0700). So
  the state root lives in a directory of its own that they can reach (``reachable_root``);
  that the plugins refuse an unreachable root with a clear error is tested separately.
- A server outlives the command that started it, and so would outlive a failed test:
  ``reachable_root`` kills every server found through the services' pid files on the way
  out, whatever happened.
"""

import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import yaml
from conftest import REPO, Gokku, Result, write_settings

PID_FILES = {"data/postmaster.pid": "postgres", "data/redis.pid": "redis-server"}


@contextlib.contextmanager
def reachable_root(*plugins: str) -> Iterator[Gokku]:
    """A Gokku CLI on a fresh state root that the servers' users can reach, with the
    bundled ``plugins`` added."""
    top = Path(tempfile.mkdtemp(prefix="gokku-bundled-"))
    top.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOKKU_", "PYTEST_"))}
    env.update(GOKKU_ROOT=str(top / "root"), PYTHONPATH=str(REPO), GOKKU_LOCK_TIMEOUT="60")
    write_settings(top / "root")
    try:
        gokku = Gokku(top / "root", env)
        for plugin in plugins:
            gokku.ok("plugins:add", plugin)
        yield gokku
    finally:
        kill_servers(top / "root")
        shutil.rmtree(top, ignore_errors=True)


def server_pid(service_dir: Path) -> int | None:
    """The pid of the service's server when it runs (checked by process name)."""
    for rel, comm in PID_FILES.items():
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int((service_dir / rel).read_text().split()[0])
            if Path(f"/proc/{pid}/comm").read_text().strip() == comm:
                return pid
    return None


def kill_servers(root: Path) -> None:
    """Stop every service's server at once: QUIT first, which a PostgreSQL postmaster
    takes for an immediate shutdown that still removes its shared memory (KILLed, it
    leaves its segments in /dev/shm, RAM lost until reboot); then KILL it and its
    children (PostgreSQL's are not in its group) if it is still there."""
    for service_dir in root.glob("services/*"):
        pid = server_pid(service_dir)
        if pid is None:
            continue
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)
        if wait_gone(pid, 5):
            continue
        for victim in [pid, *children(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        wait_gone(pid)


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
    return found


def wait_gone(pid: int, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while Path(f"/proc/{pid}").exists():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def human_bytes(count: int) -> str:
    """A byte count as the helpers' meter writes it: binary units, one decimal, rounded."""
    if count < 1024:
        return f"{count} B"
    unit, div = 0, 1
    while unit < 4 and count >= div * 1024:
        unit, div = unit + 1, div * 1024
    tenths = (count * 10 + div // 2) // div
    return f"{tenths // 10}.{tenths % 10} {('B', 'KiB', 'MiB', 'GiB', 'TiB')[unit]}"


def statuses(gokku: Gokku) -> dict[str, str]:
    """Each service's STATUS as ``services:list`` shows it (from the plugin's status)."""
    listed = json.loads(gokku.ok("services:list", "--format", "json").stdout)
    return {service["name"]: service["status"] for service in listed}


def read_env(gokku: Gokku, app: str) -> dict[str, str]:
    """The variables in an app's .env (``KEY=VALUE`` lines)."""
    text = (gokku.root / "apps" / app / "shared" / ".env").read_text()
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def sql(gokku: Gokku, service: str, query: str, *how: str) -> str:
    """A query's rows (or RETURNING's), unaligned, through `pg:connect` (psql -qtA); HOW:
    pg:connect's own options (--superuser, which a WAL switch needs)."""
    return gokku.ok("pg:connect", service, *how, "-qtA", "-c", query).stdout.strip()


def run_in_pty(
    gokku: Gokku,
    *args: str,
    stdin_tty: bool,
    stdout_tty: bool,
    stderr_tty: bool = False,
    dialogue: tuple[tuple[bytes, bytes], ...] = (),
    cwd: Path = REPO,
    out_rate: int = 0,
) -> Result:
    """Run the CLI (in ``cwd``) with a real terminal (its controlling one) on stdin,
    stdout and/or stderr; what the terminal showed is the result's output of the streams
    on it.

    ``dialogue``: (pattern, keystrokes) pairs; the keystrokes are typed once the output
    since the previous keystrokes matches the pattern (a regular expression), that is
    once the program prompts: programs that switch the terminal to raw mode discard what
    was typed before. stderr stays a pipe unless ``stderr_tty``, so what a command writes
    there cannot be mistaken for its output. ``out_rate``: read a piped stdout at about
    that many bytes per second, as a slow disk or network would. The command is killed if
    it is still there after a minute.
    """
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    on_tty = (stdin_tty, stdout_tty, stderr_tty)

    def take_terminal() -> None:
        os.setsid()
        fcntl.ioctl(on_tty.index(True), termios.TIOCSCTTY, 0)

    proc = subprocess.Popen(
        [sys.executable, "-m", "gokku", *args],
        stdin=slave if stdin_tty else subprocess.DEVNULL,
        stdout=slave if stdout_tty else subprocess.PIPE,
        stderr=slave if stderr_tty else subprocess.PIPE,
        env={**gokku.env, "TERM": "xterm"},
        cwd=cwd,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    piped: dict[str, bytes] = {}
    streams = {
        key: stream
        for key, stream, tty in (("out", proc.stdout, stdout_tty), ("err", proc.stderr, stderr_tty))
        if not tty
    }
    readers = [
        threading.Thread(
            target=lambda k=key, s=stream: piped.update(
                {k: _drain(s, out_rate if k == "out" else 0)}
            ),
            daemon=True,
        )
        for key, stream in streams.items()
    ]
    for reader in readers:
        reader.start()
    pending = list(dialogue)
    out = b""
    mark = 0
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if pending and re.search(pending[0][0], out[mark:], re.S):
                os.write(master, pending.pop(0)[1])
                mark = len(out)
            ready, _, _ = select.select([master], [], [], 1)
            if not ready:
                continue
            try:
                chunk = os.read(master, 1 << 16)
            except OSError:  # EIO: every holder of the terminal's other end is gone
                break
            if not chunk:
                break
            out += chunk
        code = proc.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        os.close(master)
    for reader in readers:
        reader.join(timeout=10)
    return Result(code, out if stdout_tty else piped["out"], out if stderr_tty else piped["err"])


def _drain(stream, rate: int) -> bytes:
    """Everything from ``stream``; at about ``rate`` bytes per second when given."""
    if not rate:
        return stream.read()
    data = bytearray()
    while chunk := stream.read1(16384):
        data += chunk
        time.sleep(len(chunk) / rate)
    return bytes(data)


def pg_dump_without_creation_time(dump: bytes) -> bytes:
    """A custom-format dump with the creation time in its header zeroed.

    pg_dump writes the time it started into the header, so two dumps of the same data a
    second apart differ there and nowhere else. Header: "PGDMP", major, minor, revision,
    int size, offset size, format; the compression (an int before archive version 1.15, a
    byte from then on); then the creation time as seven ints (sec, min, hour, mday, mon,
    year, isdst), each a sign byte and int-size bytes.
    """
    assert dump[:5] == b"PGDMP", dump[:16]
    major, minor, int_size = dump[5], dump[6], dump[8]
    start = 11 + (1 + int_size if (major, minor) < (1, 15) else 1)
    end = start + 7 * (1 + int_size)
    return dump[:start] + bytes(end - start) + dump[end:]


def rdb_without_aux(rdb: bytes) -> bytes:
    """An RDB snapshot without its AUX fields and its trailing CRC64.

    The AUX fields say when and by which server the snapshot was made (ctime, used-mem,
    replication offset): they differ between two snapshots of the same data, and so does
    the checksum, which covers them. What remains is the header and the data.
    """
    assert rdb[:5] == b"REDIS", rdb[:16]
    pos = 9
    while rdb[pos] == 0xFA:  # RDB_OPCODE_AUX: a key string and a value string
        pos = _skip_rdb_string(rdb, _skip_rdb_string(rdb, pos + 1))
    return rdb[:9] + rdb[pos:-8]


def _skip_rdb_string(data: bytes, pos: int) -> int:
    first = data[pos]
    kind, low = first >> 6, first & 0x3F
    if kind == 0:  # 6-bit length
        return pos + 1 + low
    if kind == 1:  # 14-bit length
        return pos + 2 + ((low << 8) | data[pos + 1])
    if first in (0x80, 0x81):  # 32- or 64-bit length, big-endian
        width = 4 if first == 0x80 else 8
        return pos + 1 + width + int.from_bytes(data[pos + 1 : pos + 1 + width], "big")
    if kind == 3 and low in (0, 1, 2):  # an integer of 1, 2 or 4 bytes
        return pos + 1 + (1, 2, 4)[low]
    raise ValueError(f"unexpected string encoding {first:#x} at offset {pos}")


def next_available_port(gk: Gokku) -> int:
    """The port a create would be offered next, found without holding it (next-port would
    hold it, and the create would skip it for that reason instead of the one under test):
    the first free one of the root's service_ports."""
    start = int(yaml.safe_load((gk.root / "gokku.yml").read_text())["service_ports"].split("-")[0])
    return next(
        port
        for port in range(start, start + 100)
        if gk("services:next-port", "--check", str(port)).code == 0
    )


def host_address() -> str:
    """An address of this machine beyond loopback (an exposed service's clients come from
    there); 127.0.0.2 when it has none (only 127.0.0.1 and ::1 count as this host's own
    clients in what expose writes)."""
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True, text=True
    ).stdout
    found = re.findall(r"inet (\d+\.\d+\.\d+\.\d+)/", shown)
    return found[0] if found else "127.0.0.2"


def refused_in_one_line(result: Result) -> bool:
    """Bad input's answer: a non-zero exit, nothing on stdout, one line on stderr."""
    return result.code != 0 and result.stdout == "" and result.stderr.count("\n") == 1
