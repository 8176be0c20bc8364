"""``gokku doctor``: what killed commands and full disks leave behind, found and repaired.

Each check returns findings: one line saying what is wrong, and when a repair is safe, a
function that makes it (under the lock the half-done command held, re-checking there) and
says what it did. Writes are ordered so that what a crash leaves is recognisable: a temp
file of an atomic write, a staging directory, a registry ahead of authorized_keys, an old
plugin tree set aside by an update. The cheap checks (no walk of the whole state) also run
when the server starts and at ``services:start --all``.
"""

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from gokku import apps, keys, services
from gokku.errors import GokkuError
from gokku.names import is_name
from gokku.paths import Root
from gokku.plugins import install
from gokku.ssh.config import load as load_config
from gokku.storage import lock

# An atomic write takes milliseconds and plugin staging is redone under the plugin's lock:
# a temp file or staging directory this old belongs to no command still running.
STALE_SECONDS = 60
# A push writes into git's incoming directory while it runs, with no lock of ours to ask:
# only one that has not changed for this long is taken for dead.
QUARANTINE_SECONDS = 600


@dataclass(frozen=True)
class Finding:
    message: str
    fix: Callable[[], str] | None = None  # repairs it; returns what it did


def examine(root: Root, cheap_only: bool = False) -> list[Finding]:
    """Every finding, in a stable order; a record a check cannot read is a finding too."""
    findings: list[Finding] = []
    for check, cheap in CHECKS:
        if cheap or not cheap_only:
            try:
                findings += check(root)
            except GokkuError as exc:
                findings.append(Finding(exc.message))
    return findings


def _relative(root: Root, path: Path) -> str:
    return str(path.relative_to(root.path))


def _unchanged_for(path: Path, seconds: float) -> bool:
    """Whether nothing in ``path`` (a file or a whole tree) changed for ``seconds``."""
    newest = 0.0
    with contextlib.suppress(FileNotFoundError):
        newest = path.lstat().st_mtime
        for folder, dirs, files in os.walk(path):
            for name in dirs + files:
                with contextlib.suppress(FileNotFoundError):
                    newest = max(newest, os.lstat(os.path.join(folder, name)).st_mtime)
    return time.time() - newest > seconds


def _remove(path: Path) -> str:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return "removed"


def _walk_state(root: Root) -> Iterator[Path]:
    """Every file of the state but git's (checked apart) and plugin staging (removed whole)."""
    for folder, dirs, files in os.walk(root.path):
        here = Path(folder)
        dirs[:] = [
            d
            for d in dirs
            if not (here == root.path and d == "repos")
            and not (here == root.plugins and install.STAGING.fullmatch(d))
        ]
        yield from (here / name for name in files)


def temp_files(root: Root) -> list[Finding]:
    return [
        Finding(
            f"{_relative(root, path)}: temp file of an interrupted write", partial(_remove, path)
        )
        for path in _walk_state(root)
        if path.name.startswith(".")
        and path.name.endswith(".tmp")
        and _unchanged_for(path, STALE_SECONDS)
    ]


def plugin_staging(root: Root) -> list[Finding]:
    findings = []
    for name, path in install.staging_dirs(root):
        fix = partial(_clear_staging, root, name, path)
        if (path / install.PREVIOUS).is_dir() and not root.plugin_dir(name).exists():
            findings.append(
                Finding(
                    f"plugin {name} is missing: an update was cut off between its two renames; "
                    f"its previous copy is in {_relative(root, path / install.PREVIOUS)}",
                    fix,
                )
            )
        elif _unchanged_for(path, STALE_SECONDS):
            where = _relative(root, path)
            findings.append(Finding(f"{where}: staging of an interrupted plugin command", fix))
    return findings


def _clear_staging(root: Root, name: str, path: Path) -> str:
    with lock(root.locks, f"plugin-{name}"):
        restored = install.restore_interrupted(root, name)
        _remove(path)
    return "put its previous copy back" if restored else "removed"


def git_incoming(root: Root) -> list[Finding]:
    return [
        Finding(
            f"{_relative(root, path)}: objects of a push that was cut off", partial(_remove, path)
        )
        for path in sorted(root.repos.glob("*.git/objects/tmp_objdir-incoming-*"))
        if _unchanged_for(path, QUARANTINE_SECONDS)
    ]


def port_holds(root: Root) -> list[Finding]:
    return [
        Finding(
            f"port {port} is held in services/{services.HELD_PORTS}: {why}", partial(_drop, root)
        )
        for port, why in services.useless_port_holds(root).items()
    ]


def _drop(root: Root) -> str:
    services.drop_useless_port_holds(root)
    return "dropped the hold"


def authorized_keys(root: Root) -> list[Finding]:
    if keys.authorized_keys_in_step(root, load_config(root)):
        return []
    return [
        Finding(
            "ssh/authorized_keys is out of step with the key registry (ssh/keys.json)",
            partial(_rewrite_authorized_keys, root),
        )
    ]


def _rewrite_authorized_keys(root: Root) -> str:
    keys.sync_authorized_keys(root, load_config(root))
    return "rewrote it from the registry"


def service_dirs(root: Root) -> list[Finding]:
    findings = []
    folders = sorted(root.services.iterdir()) if root.services.is_dir() else []
    for path in folders:
        if path.name.startswith(".") or not path.is_dir() or (path / services.RECORD).exists():
            continue
        where = _relative(root, path)
        if is_name(path.name) and not any(path.iterdir()):
            fix = partial(_remove_empty_service_dir, root, path.name)
            findings.append(Finding(f"{where}: empty, without {services.RECORD}", fix))
        else:
            findings.append(
                Finding(f"{where}: holds files but no {services.RECORD}: look, then move it away")
            )
    return findings


def _remove_empty_service_dir(root: Root, name: str) -> str:
    with services.service_lock(root, name):
        path = root.service_dir(name)
        if not path.is_dir():
            return "already gone"
        if (path / services.RECORD).exists() or any(path.iterdir()):
            return "left alone: it is in use now"
        path.rmdir()
    return "removed"


def cut_off_destroys(root: Root) -> list[Finding]:
    found = apps.leftover_destroys(root) + services.leftover_destroys(root)
    return [Finding(message, fix) for message, fix in found]


CHECKS: list[tuple[Callable[[Root], list[Finding]], bool]] = [
    (temp_files, False),  # walks the whole state
    (plugin_staging, True),
    (git_incoming, True),
    (port_holds, True),
    (authorized_keys, True),
    (service_dirs, True),
    (cut_off_destroys, True),
]
