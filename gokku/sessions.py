"""The OpenSSH door's sessions of a key: capped, and hung up when the key is removed.

sshd knows nothing of Gokku's keys, so its forced command counts them itself: each
session takes one of ``max_sessions_per_key`` slots of its key (the embedded server's
cap, from gokku.yml), a lock file under ``locks/sessions/`` held (flock) for as long as
the session runs, with its pid written in it; a member key with every slot taken is
refused. Admin keys take slots past the cap (they are never refused, as on the embedded
server), so that ``ssh-keys:remove`` finds every session of the key it removes and hangs
each up (SIGHUP: the way the door ends a session whose client went away). The embedded
server counts its own sessions (``gokku.ssh.server.Limits``).
"""

import contextlib
import fcntl
import hashlib
import itertools
import os
import signal
from pathlib import Path

from gokku.errors import GokkuError
from gokku.paths import Root

FOLDER = "sessions"


def take(root: Root, fingerprint: str, name: str, cap: int | None) -> int:
    """Hold a free slot of the key for this process (its descriptor, kept open until the
    process ends); GokkuError when ``cap`` slots are all held. ``cap`` None: no cap."""
    numbers = range(cap) if cap is not None else itertools.count()
    for number in numbers:
        fd = _open(_slot(root, fingerprint, number))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
    raise GokkuError(f"too many sessions with key {name}")


def hang_up(root: Root, fingerprint: str) -> None:
    """Hang up every session holding a slot of the key, but this process."""
    for path in _folder(root).glob(f"{_prefix(fingerprint)}-*"):
        with contextlib.suppress(FileNotFoundError), open(path, "rb") as slot:
            try:
                fcntl.flock(slot, fcntl.LOCK_SH | fcntl.LOCK_NB)
                continue  # free: no session holds it
            except BlockingIOError:
                pass
            said = slot.read().split()
            pid = int(said[0]) if said and said[0].isdigit() else 0
            if pid > 0 and pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGHUP)


def _folder(root: Root) -> Path:
    return root.locks / FOLDER


def _prefix(fingerprint: str) -> str:
    """A file name for the fingerprint (which holds ``/`` and ``+``)."""
    return hashlib.sha256(fingerprint.encode()).hexdigest()[:32]


def _slot(root: Root, fingerprint: str, number: int) -> Path:
    return _folder(root) / f"{_prefix(fingerprint)}-{number}"


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
