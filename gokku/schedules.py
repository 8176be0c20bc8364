"""A service's schedules (``services/SVC/schedules.json``): gokku commands that cron runs.

The records are the truth; the crontab of the state's owner holds a block rendered from
them (``render``), rewritten whole at every change. Each record keeps its cron
expression, the command (``postgres:backup db --type full``), and its last run's start,
end and exit status, written by the cron line itself (``run``), so that ``doctor`` can
tell a schedule that silently stopped or keeps failing.

The records live in the service's directory: a destroy takes them with it in the same
rename. A destroy cut off before it rendered the crontab again leaves a line that runs
nothing: that line, when it fires, finds no record and renders the block again; so does
the next change of any schedule, and ``doctor --fix``.
"""

import os
import shlex
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gokku import cron, services
from gokku.errors import GokkuError, NotFound, ScriptFailed
from gokku.names import check_name
from gokku.paths import Root
from gokku.storage import read_json, write_json

RECORD = "schedules.json"
# cron starts a line within the minute; a late start of this much is no stopped schedule.
SLACK_SECONDS = 600
# The environment of the line's gokku: cron's own is nearly empty.
CRON_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
ISO = "%Y-%m-%dT%H:%M:%SZ"


def _path(root: Root, name: str) -> Path:
    return root.service_dir(name) / RECORD


def _now() -> str:
    return time.strftime(ISO, time.gmtime())


def _epoch(stamp: str) -> float:
    return datetime.strptime(stamp, ISO).replace(tzinfo=UTC).timestamp()


def load(root: Root, name: str) -> dict[str, Any]:
    """The service's schedule records (``next_id``, ``schedules``); none when it has no file."""
    path = _path(root, name)
    data = read_json(path) if path.is_file() else {}
    if not isinstance(data, dict) or not isinstance(data.get("schedules", []), list):
        raise GokkuError(f"{path} is not a record of schedules: restore it or remove it")
    data.setdefault("next_id", 1)
    data.setdefault("schedules", [])
    return data


def _save(root: Root, name: str, data: dict[str, Any]) -> None:
    write_json(_path(root, name), data)


def listing(root: Root, name: str) -> list[dict[str, Any]]:
    services.load(root, name)
    return load(root, name)["schedules"]


def add(
    root: Root,
    name: str,
    expression: str,
    command: list[str],
    first_also: tuple[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """Add a schedule running ``gokku COMMAND`` (and, when the service had none so far,
    ``first_also``: a second one, e.g. a weekly verify); return what was added. The
    crontab is rendered again before the lock is let go."""
    if not command:
        raise GokkuError("a schedule needs a command")
    entries = [(cron.parse(expression).text, command)]
    if first_also is not None:
        entries.append((cron.parse(first_also[0]).text, first_also[1]))
    with services.service_lock(root, name):
        service = services.load(root, name)
        if service.data.get("state") == services.CREATING:
            raise GokkuError(f"service {name!r} is being created: schedule it once it exists")
        data = load(root, name)
        if data["schedules"]:
            entries = entries[:1]
        added = []
        for text, words in entries:
            record = {"id": str(data["next_id"]), "cron": text, "command": words}
            record["created_at"] = _now()
            data["next_id"] += 1
            data["schedules"].append(record)
            added.append(record)
        _save(root, name, data)
        render(root)
    return added


def remove(root: Root, name: str, ident: str | None) -> list[dict[str, Any]]:
    """Remove the schedule ID, or every one of the service's; return what went."""
    with services.service_lock(root, name):
        services.load(root, name)
        data = load(root, name)
        gone = [s for s in data["schedules"] if ident is None or s["id"] == ident]
        if ident is not None and not gone:
            known = ", ".join(s["id"] for s in data["schedules"]) or "none"
            raise NotFound(f"service {name!r} has no schedule {ident} (its schedules: {known})")
        data["schedules"] = [s for s in data["schedules"] if s not in gone]
        _save(root, name, data)
        render(root)
    return gone


def had_schedules(root: Root, name: str) -> bool:
    """Whether the service has schedules (a destroy then renders the crontab after it)."""
    try:
        return bool(load(root, name)["schedules"])
    except GokkuError:
        return True


# ---- The crontab block ------------------------------------------------------------------


def owner(root: Root) -> str:
    """How the block is marked: the root's path, which no other root has."""
    path = str(root.path.resolve())
    if any(c in path for c in "\n\r%"):
        raise GokkuError(f"{path} holds a newline or '%', which a crontab line cannot carry")
    return path


def command_line(root: Root, name: str, record: dict[str, Any]) -> str:
    """What cron runs for RECORD: ``services:schedule run``, recording the run."""
    words = ["services:schedule", "run", name, record["id"]]
    return cron_line(root, record["cron"], words, " ".join(record["command"]))


def cron_line(root: Root, expression: str, verb: list[str], shown: str) -> str:
    """A line of this root's block: this very gokku (its interpreter, its package) on
    this root runs ``verb``; ``shown`` follows as a comment for whoever reads it."""
    python = sys.executable
    package = str(Path(__file__).resolve().parent.parent)
    for text in (python, package):
        if any(c in text for c in "\n\r%"):
            raise GokkuError(f"{text} holds a newline or '%', which a crontab line cannot carry")
    words = [
        f"GOKKU_ROOT={shlex.quote(owner(root))}",
        f"PYTHONPATH={shlex.quote(package)}",
        f"PATH={CRON_PATH}",
        shlex.quote(python),
        "-P",
        "-m",
        "gokku",
        "--quiet",
        *verb,
    ]
    shown = shown.replace("\n", " ").replace("%", "")
    return f"{expression} {' '.join(words)} # {shown}"


def _all_records(root: Root) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for service in services.all_services(root):
        for record in load(root, service.name)["schedules"]:
            found.append((service.name, record))
    return found


def wanted_lines(root: Root) -> list[str]:
    """The services' schedules, then the plugins' automatic updates when they are on."""
    from gokku.plugins import autoupdate

    lines = [command_line(root, name, record) for name, record in _all_records(root)]
    return lines + autoupdate.cron_lines(root)


def render(root: Root) -> bool:
    """Rewrite this root's block of the crontab from the records (nothing else in the
    crontab changes); whether it had to. The records are read under the crontab's lock:
    of two changes to two services at once, the one rendered last sees both."""
    with cron.crontab_lock():
        lines = wanted_lines(root)
        if not lines and not cron.installed():  # no cron: nothing to clean
            return False
        current = cron.read_crontab()
        new = cron.with_block(current, owner(root), lines)
        if new == current:
            return False
        cron.write_crontab(new)
    return True


def block_in_step(root: Root) -> bool:
    lines = wanted_lines(root)
    if not lines and not cron.installed():
        return True
    return (cron.block_of(cron.read_crontab(), owner(root)) or []) == lines


# ---- A run, from cron -------------------------------------------------------------------


def log_path(root: Root, name: str, ident: str) -> Path:
    return root.service_dir(name) / f"schedule-{ident}.log"


def cli_env(root: Root) -> dict[str, str]:
    """The environment of a gokku that Gokku starts itself, outside any request (a cron
    line's command, doctor's backup checks): cron's own is nearly empty."""
    env = {
        "GOKKU_ROOT": str(root.path),
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "PATH": os.environ.get("PATH") or CRON_PATH,
    }
    for var in ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    return env


def run(root: Root, name: str, ident: str) -> int:
    """Run the schedule, recording its start, end and exit status, with its output in
    ``services/SVC/schedule-ID.log``; its exit status is ours, with one line saying so
    (cron mails that line: the output is in the log). A
    schedule that is no longer recorded (its line outlived it) runs nothing and takes its
    line out of the crontab."""
    check_name("service", name)
    with services.service_lock(root, name):
        record = _record(root, name, ident)
        if record is not None:
            record["last_run"] = {"start": _now(), "end": None, "exit": None}
            _update(root, name, record)
    if record is None:
        render(root)
        raise GokkuError(
            f"service {name!r} has no schedule {ident} (any longer): its cron line was removed"
        )
    env = cli_env(root)
    with open(log_path(root, name, ident), "wb") as log:
        code = subprocess.run(
            [sys.executable, "-P", "-m", "gokku", *record["command"]],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        ).returncode
    with services.service_lock(root, name):
        current = _record(root, name, ident)
        if current is not None:
            current["last_run"] = {**record["last_run"], "end": _now(), "exit": code}
            _update(root, name, current)
    if code != 0:  # the one line cron mails
        log = log_path(root, name, ident).relative_to(root.path)
        raise ScriptFailed(f"{' '.join(record['command'])} exited {code}: see {log}", code)
    return 0


def _record(root: Root, name: str, ident: str) -> dict[str, Any] | None:
    if not services.exists(root, name):
        return None
    return next((s for s in load(root, name)["schedules"] if s["id"] == ident), None)


def _update(root: Root, name: str, record: dict[str, Any]) -> None:
    """Write RECORD in place of the one with its id; the caller holds the service's lock."""
    data = load(root, name)
    data["schedules"] = [record if s["id"] == record["id"] else s for s in data["schedules"]]
    _save(root, name, data)


# ---- What doctor reports ----------------------------------------------------------------


def problems(root: Root, now: float | None = None) -> list[str]:
    """Each schedule that missed its last due time (by more than SLACK_SECONDS) or whose
    last run failed, one line each."""
    now = time.time() if now is None else now
    found = []
    for name, record in _all_records(root):
        command = " ".join(record["command"])
        what = f"service {name}'s schedule {record['id']} ({command}, '{record['cron']}')"
        last = record.get("last_run") or {}
        due = cron.parse(record["cron"]).previous(datetime.fromtimestamp(now - SLACK_SECONDS))
        due_at = due.timestamp() if due is not None else 0.0
        since = _epoch(last["start"]) if last.get("start") else _epoch(record["created_at"])
        if due_at > since:
            ran = f"last ran {last['start']}" if last.get("start") else "has never run"
            found.append(
                f"{what} {ran}, but was due {time.strftime(ISO, time.gmtime(due_at))}: "
                "is cron running (systemctl status cron), and is its line in crontab -l?"
            )
        elif last.get("exit") not in (None, 0):
            log = log_path(root, name, record["id"]).relative_to(root.path)
            found.append(f"{what} failed at {last['start']} (exit {last['exit']}): see {log}")
    return found
