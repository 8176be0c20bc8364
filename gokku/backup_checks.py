"""The services' backups as ``doctor`` sees them: each service that backs up is checked by
its plugin's ``backup-check`` (the one-line Nagios check), and a check that is not OK is
a finding: the newest backup older than the service's max age (26 hours unless
``services:config-set SVC backup_max_age=8d``), no backup at all while it has schedules,
its WAL archiving failing.

A service with neither schedules nor backups starts no script: what says it has backups
is a look at its directory, where the bundled postgres plugin keeps them (a directory per
backup in its pgBackRest repository, or an off-site target).
"""

import subprocess
import sys

from gokku import schedules
from gokku.errors import GokkuError
from gokku.paths import Root
from gokku.plugins import registry
from gokku.services import Service

CHECK_COMMAND = "backup-check"
MAX_AGE_KEY = "backup_max_age"
# A check reads the backups' list, off-site targets' too: an unreachable one is retried
# for minutes by pgBackRest; doctor says so rather than wait longer.
TIMEOUT_SECONDS = 300


def problems(root: Root, services: list[Service]) -> list[str]:
    """One line per service whose backup check is not OK."""
    found = []
    for service in services:
        if not _backs_up(root, service) or not _has_check(root, service):
            continue
        said = _check(root, service)
        if said:
            found.append(f"service {service.name}'s backups: {said}")
    return found


def _backs_up(root: Root, service: Service) -> bool:
    """Whether the service has schedules, or backups (locally or off-site)."""
    if schedules.had_schedules(root, service.name):
        return True
    local = service.path / "backup" / "repo" / "backup" / service.name
    return any(local.glob("2*")) or any((service.path / "backup-targets").glob("*.env"))


def _has_check(root: Root, service: Service) -> bool:
    try:
        plugin = registry.load(root, service.plugin)
    except GokkuError:
        return False
    return not plugin.disabled and plugin.script(CHECK_COMMAND) is not None


def _check(root: Root, service: Service) -> str:
    """The check's line when it is not OK, else nothing."""
    max_age = service.config.get(MAX_AGE_KEY)
    argv = [sys.executable, "-P", "-m", "gokku", "--quiet"]
    argv += [f"{service.plugin}:{CHECK_COMMAND}", service.name]
    argv += ["--max-age", str(max_age)] if max_age else []
    try:
        done = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=schedules.cli_env(root),
            timeout=TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        return f"{CHECK_COMMAND} did not answer within {TIMEOUT_SECONDS} s"
    if done.returncode == 0:
        return ""
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip(" !") if lines else f"{CHECK_COMMAND} exited {done.returncode}"
