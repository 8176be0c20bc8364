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
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from gokku import __version__, access, apps, backup_checks, cron, keys, schedules, services
from gokku.errors import GokkuError
from gokku.names import is_name
from gokku.paths import Root
from gokku.plugins import install, registry, semver
from gokku.ssh.config import load as load_config
from gokku.storage import lock, read_json, remove_tree

# An atomic write takes milliseconds and plugin staging is redone under the plugin's lock:
# a temp file or staging directory this old belongs to no command still running.
STALE_SECONDS = 60
# A push writes into git's incoming directory while it runs, with no lock of ours to ask:
# only one that has not changed for this long is taken for dead.
QUARANTINE_SECONDS = 600


@dataclass(frozen=True)
class Finding:
    message: str
    # Repairs it and returns what it did; a GokkuError says why it could not.
    fix: Callable[[], str] | None = None


def examine(root: Root, cheap_only: bool = False) -> list[Finding]:
    """Every finding, in a stable order; a record a check cannot read is a finding too."""
    findings: list[Finding] = []
    for check, cheap in CHECKS:
        if cheap or not cheap_only:
            try:
                found = check(root)
            except GokkuError as exc:
                found = [Finding(_said(root, exc))]
            # An unreadable record stops every check that reads it: said once.
            findings += [f for f in found if f.message not in {g.message for g in findings}]
    return findings


def _said(root: Root, exc: GokkuError) -> str:
    """An error's message with the paths in it relative to the root, as findings say them."""
    return exc.message.replace(f"{root.path}/", "")


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
        remove_tree(path)
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
    """Only an unreadable file: a hold that holds nothing any more (lapsed, or on a port a
    service records) harms nothing and goes at the next write of the file."""
    try:
        services.stored_port_holds(root)
    except GokkuError as exc:
        return [Finding(_said(root, exc), partial(_remove, root.services / services.HELD_PORTS))]
    return []


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


def registries(root: Root) -> list[Finding]:
    """Each record that no command can read: the key registry, a service's record, a
    plugin's record. Restoring one is for a human; the other checks skip what it holds."""
    findings = []
    try:
        keys.load(root)
    except GokkuError as exc:
        findings.append(Finding(_said(root, exc)))
    for path in _service_records(root):
        try:
            services.load(root, path.parent.name)
        except GokkuError as exc:
            findings.append(Finding(_said(root, exc)))
    for path in sorted(root.plugins.glob(f"*/{registry.RECORD}")) if root.plugins.is_dir() else []:
        try:
            record = read_json(path)
        except GokkuError as exc:
            findings.append(Finding(_said(root, exc)))
            continue
        problem = _plugin_record_problem(record)
        if problem:
            findings.append(Finding(f"{_relative(root, path)} is not a plugin record ({problem})"))
    return findings


def _plugin_record_problem(record: object) -> str:
    """What routing would trip on (``registry.Plugin``): the record is read as written."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("namespace") or "", str):
        return "namespace is not a string"
    commands = record.get("commands_io") or {}
    if not isinstance(commands, dict) or not all(isinstance(v, dict) for v in commands.values()):
        return "commands_io is not a map of commands to settings"
    return ""


def _service_records(root: Root) -> list[Path]:
    if not root.services.is_dir():
        return []
    return [
        path
        for path in sorted(root.services.glob(f"*/{services.RECORD}"))
        if not path.parent.name.startswith(".") and is_name(path.parent.name)
    ]


def _readable_services(root: Root) -> list[services.Service]:
    """The services whose records can be read (``registries`` reports the others)."""
    found = []
    for path in _service_records(root):
        with contextlib.suppress(GokkuError):
            found.append(services.load(root, path.parent.name))
    return found


def _readable_keys(root: Root) -> list[keys.Key]:
    try:
        return keys.load(root)
    except GokkuError:  # reported by ``registries``
        return []


def creating_dirs(root: Root) -> list[Finding]:
    """``services/.creating-NAME-XXXXXXXX``: a record being put in place (``services.place``
    renames it within milliseconds) when the create was killed."""
    folders = sorted(root.services.glob(".creating-*")) if root.services.is_dir() else []
    return [
        Finding(
            f"{_relative(root, path)}: staging of an interrupted services:create",
            partial(_remove_creating_dir, root, path),
        )
        for path in folders
        if _unchanged_for(path, STALE_SECONDS)
    ]


def _remove_creating_dir(root: Root, path: Path) -> str:
    name = path.name[len(".creating-") : -len("-XXXXXXXX")]
    if not is_name(name):
        return _remove(path)
    with services.service_lock(root, name):  # no create of that name is placing it now
        return _remove(path)


def stuck_creating(root: Root) -> list[Finding]:
    """A record still ``creating`` whose lock nobody holds: its create died after the
    record was placed (the create holds the service's lock until its install is done).
    Undoing it runs the plugin's uninstall: that is ``services:destroy``, not doctor's."""
    return [
        Finding(
            f"service {service.name} is stuck creating: its create was cut off (undo it: "
            f"gokku services:destroy {service.name} --force)"
        )
        for service in _readable_services(root)
        if service.data.get("state") == services.CREATING
        and _unlocked(root, f"service-{service.name}")
    ]


def _unlocked(root: Root, name: str) -> bool:
    try:
        with lock(root.locks, name, timeout=0):
            return True
    except GokkuError:
        return False


def links(root: Root) -> list[Finding]:
    """Links whose record and the app's .env disagree: one to an app that is gone, one
    cut off halfway (``pending``), one whose variables are missing from the .env (a hand
    edit). Each is finished from its record; one to a missing app is forgotten."""
    findings = []
    for service in _readable_services(root):
        for record in [] if services.is_original(service) else service.links:
            app, env, name = record["app"], record["env"], service.name
            where = f"service {name}'s link to app {app} ({env})"
            if not (is_name(app) and is_name(env)):
                findings.append(Finding(f"{where}: not a valid app or environment name"))
            elif not apps.exists(root, app):
                fix = partial(_forget_link, root, name, app, env)
                findings.append(Finding(f"{where}: the app does not exist", fix))
            elif record.get("pending"):
                fix = partial(_finish_link, root, name, app, env)
                findings.append(Finding(f"{where} was cut off halfway", fix))
            elif missing := sorted(set(record["keys"]) - apps.read_env(root, app, env).keys()):
                fix = partial(_finish_link, root, name, app, env)
                env_file = _relative(root, root.env_file(app, env))
                findings.append(
                    Finding(f"{where}: {', '.join(missing)} missing from {env_file}", fix)
                )
    return findings


def _forget_link(root: Root, name: str, app: str, env: str) -> str:
    with apps.app_lock(root, app):
        if apps.exists(root, app):
            return "left alone: the app exists now"
        services.unlink(root, name, app, env)
    return "forgot the link"


def _finish_link(root: Root, name: str, app: str, env: str) -> str:
    written = services.finish_link(root, name, app, env)
    return f"wrote {', '.join(written)}" if written else "recorded it"


def original_records(root: Root) -> list[Finding]:
    return [
        Finding(
            f"service {service.name} has a record of the original Gokku (linked_apps, no "
            "links): its links are unknown to unlink and destroy",
            partial(_migrate, root, service.name),
        )
        for service in _readable_services(root)
        if services.is_original(service)
    ]


def _migrate(root: Root, name: str) -> str:
    linked = services.migrate(root, name)
    return f"wrote it in the current form, links recorded for {', '.join(linked) or 'no app'}"


def dangling_grants(root: Root) -> list[Finding]:
    """Grants on an app or service that does not exist: a destroy cut off before it
    dropped them. Left there, a later create of the name would hand them over."""
    findings = []
    for key in _readable_keys(root):
        for target, level in sorted(key.grants.items()):
            kind, _, name = target.partition(":")
            if not _exists(root, kind, name):
                findings.append(
                    Finding(
                        f"key {key.name} has {level} access to {target}, which does not exist",
                        partial(_drop_grants, root, kind, name),
                    )
                )
    return findings


def _exists(root: Root, kind: str, name: str) -> bool:
    if not is_name(name) or kind not in access.KINDS:
        return False
    return apps.exists(root, name) if kind == "app" else services.exists(root, name)


def _drop_grants(root: Root, kind: str, name: str) -> str:
    """Under the name's lock, so that a create of it cannot slip in between."""
    if not (is_name(name) and kind in access.KINDS):
        held: contextlib.AbstractContextManager = contextlib.nullcontext()  # can never exist
    elif kind == "app":
        held = apps.app_lock(root, name)
    else:
        held = services.service_lock(root, name)
    with held:
        if _exists(root, kind, name):
            return "left alone: it exists now"
        keys.drop_grants(root, load_config(root), f"{kind}:{name}")
    return "dropped the grants on it"


def incompatible_plugins(root: Root) -> list[Finding]:
    """Plugins whose ``gokku:`` range excludes this Gokku: installed before an upgrade of
    Gokku, they may no longer work. Only a new version of the plugin (or of Gokku) mends it."""
    found = []
    for plugin in registry.installed(root):
        wanted = str(plugin.record.get("gokku") or "*")
        try:
            fits = semver.allows(wanted, __version__)
        except GokkuError:
            fits = False
        if not fits:
            found.append(
                Finding(f"plugin {plugin.name} needs Gokku {wanted}; this Gokku is {__version__}")
            )
    return found


def cut_off_destroys(root: Root) -> list[Finding]:
    found = apps.leftover_destroys(root) + services.leftover_destroys(root)
    return [Finding(message, fix) for message, fix in found]


def crontab_block(root: Root) -> list[Finding]:
    """The crontab's block for this root against the schedules recorded (a change or a
    destroy cut off before it rendered the block, or a hand edit)."""
    if schedules.block_in_step(root):
        return []
    return [
        Finding(
            f"the crontab of {cron.user()} does not match the schedules recorded in "
            "services/*/schedules.json (re-render it: gokku doctor --fix)",
            partial(_render_crontab, root),
        )
    ]


def _render_crontab(root: Root) -> str:
    schedules.render(root)
    return "rendered this root's block again from the records"


def schedule_runs(root: Root) -> list[Finding]:
    """Schedules that stopped running (dokku-postgres#341's silent stop) or fail: for a
    human to look at, nothing to repair here."""
    return [Finding(message) for message in schedules.problems(root)]


def backups(root: Root) -> list[Finding]:
    """Services whose newest backup is too old, or that are scheduled and have none: for a
    human to look at (take a backup, mend the schedule), nothing to repair here."""
    return [Finding(message) for message in backup_checks.problems(root, _readable_services(root))]


CHECKS: list[tuple[Callable[[Root], list[Finding]], bool]] = [
    (temp_files, False),  # walks the whole state
    (plugin_staging, True),
    (git_incoming, True),
    (port_holds, True),
    (authorized_keys, True),
    (service_dirs, True),
    (registries, True),
    (creating_dirs, True),
    (stuck_creating, True),
    (original_records, True),
    (links, False),  # reads every linked app's .env
    (dangling_grants, True),
    (cut_off_destroys, True),
    (crontab_block, False),  # runs crontab -l
    (schedule_runs, False),
    (backups, False),  # runs each backed-up service's backup-check
    (incompatible_plugins, True),
]
