"""Installed plugins: finding them by name or namespace, and finding their scripts.

A plugin lives in ``plugins/<name>/`` with its install record in ``config.json``
(Gokku's file: ``name`` and ``url``, plus where it came from and its namespace alias).
"""

from pathlib import Path
from typing import Any, NamedTuple

from gokku.errors import GokkuError, NotFound
from gokku.names import is_name
from gokku.paths import Root
from gokku.plugins import settings as settings_
from gokku.plugins.manifest import (
    CommandIO,
    command_access,
    command_io,
    command_secrets,
    command_usage,
    takes_app_option,
    takes_service,
)
from gokku.storage import read_json

RECORD = "config.json"
# Run by services:create/destroy, never as PLUGIN:CMD (that would skip destroy's checks).
LIFECYCLE = ("install", "uninstall")


class Plugin(NamedTuple):
    """An installed plugin: its directory, its record and what an admin set for it."""

    name: str
    path: Path
    record: dict[str, Any]
    settings: settings_.Settings = settings_.Settings()

    @property
    def disabled(self) -> bool:
        return self.settings.disabled

    def config_env(self) -> dict[str, str]:
        """``GOKKU_CONFIG_<KEY>`` for each of its settings that has a value."""
        return settings_.config_env(self.record, self.settings)

    def secret_settings(self) -> list[str]:
        """The values of its settings declared secret: masked for callers who may only
        read, as a service's passwords are."""
        return settings_.secret_values(self.record, self.settings)

    @property
    def namespace(self) -> str | None:
        """The alias from ``commands/name`` (``pg`` for postgres), when it differs."""
        alias = self.record.get("namespace")
        return alias if alias and alias != self.name else None

    def script(self, command: str) -> Path | None:
        """``bin/CMD`` wins over ``commands/CMD``, and over a root-level install/uninstall."""
        if not is_name(command):
            return None
        candidates = [self.path / "bin" / command, self.path / "commands" / command]
        if command in ("install", "uninstall"):
            candidates.append(self.path / command)
        return next((path for path in candidates if path.is_file()), None)

    def commands(self) -> list[str]:
        """Every command a user can call, for help and did-you-mean."""
        names = {
            path.name
            for folder in ("bin", "commands")
            for path in (self.path / folder).glob("*")
            if path.is_file() and is_name(path.name)
        }
        return sorted(names - {"name", *LIFECYCLE})

    def hook(self, name: str) -> Path | None:
        path = self.path / "hooks" / name
        return path if path.is_file() else None

    def io(self, command: str) -> CommandIO:
        """How ``command`` uses the terminal and streams (``plugin.yml``)."""
        return command_io(self.record, command)

    def access(self, command: str) -> str:
        """Who may run ``command`` (``plugin.yml``): read, write, admin or any."""
        return command_access(self.record, command)

    def secrets(self, command: str) -> list[str]:
        """The ``Field:`` lines of ``command``'s output that hold secrets (``plugin.yml``)."""
        return command_secrets(self.record, command)

    def usage(self, command: str) -> tuple[str, str] | None:
        """``command``'s usage (its arguments) and summary, when ``plugin.yml`` has them."""
        return command_usage(self.record, command)

    def takes_service(self, command: str) -> bool:
        """Whether ``command``'s first argument is a service (its declared usage)."""
        return takes_service(self.record, command)

    def takes_app_option(self, command: str) -> bool:
        """Whether ``-a APP`` after ``command`` is the app (its declared usage)."""
        return takes_app_option(self.record, command)

    def description(self) -> str:
        return str(self.record.get("description") or "")


def load(root: Root, name: str) -> Plugin:
    """The installed plugin called ``name`` (not an alias), or NotFound."""
    path = root.plugin_dir(name)
    if not path.is_dir():
        raise NotFound(f"plugin {name!r} is not installed (see: gokku plugins:list)")
    record_path = path / RECORD
    record = read_json(record_path) if record_path.is_file() else {}
    return Plugin(
        name=name,
        path=path,
        record=record if isinstance(record, dict) else {},
        settings=settings_.load(root, name),
    )


def installed(root: Root) -> list[Plugin]:
    if not root.plugins.is_dir():
        return []
    return [
        load(root, path.name)
        for path in sorted(root.plugins.iterdir())
        if path.is_dir() and is_name(path.name)
    ]


def require_enabled(plugin: Plugin) -> Plugin:
    """``plugin``, unless an admin disabled it: then none of its code runs."""
    if plugin.disabled:
        raise GokkuError(
            f"plugin {plugin.name!r} is disabled; enable it with: "
            f"gokku plugins:enable {plugin.name}"
        )
    return plugin


def find(root: Root, word: str) -> Plugin | None:
    """Resolve a command namespace: a plugin's own name first, then its alias."""
    if not is_name(word):
        return None
    if root.plugin_dir(word).is_dir():
        return load(root, word)
    return next((p for p in installed(root) if p.namespace == word), None)
