"""What an admin sets on an installed plugin: its config values, a pin, whether it is
disabled (``plugin-settings/NAME.json``, 0600: config values may be secrets).

The file lives outside the plugin's tree, which an update replaces whole, and goes with
the plugin: ``plugins:remove`` deletes it and ``plugins:add`` of a plugin not installed
starts without one, so a name installed again starts clean. Changes are made under the
plugin's lock (``plugin-NAME``), the one add, update and remove take.
"""

import contextlib
from collections.abc import Callable
from typing import Any, NamedTuple

from gokku.errors import GokkuError, UsageError
from gokku.paths import Root
from gokku.plugins.semver import Version
from gokku.storage import fsync_dir, read_json, write_json

CONFIG_PREFIX = "GOKKU_CONFIG_"
REDACTED = "<redacted>"


class Settings(NamedTuple):
    """What an admin set for a plugin: its configuration, its pin, whether it is disabled.
    Never changed in place (the file is rewritten and read again): the empty default is
    shared."""

    config: dict[str, str] = {}  # shared: see the docstring
    pin: str | None = None
    disabled: bool = False

    @property
    def frozen(self) -> bool:
        """Pinned at one version: no update moves the plugin. A range (``~1.4``) is a pin
        updates move the plugin within."""
        if self.pin is None:
            return False
        try:
            Version.parse(self.pin)
        except GokkuError:
            return False
        return True


def load(root: Root, name: str) -> Settings:
    """The plugin's settings; none set is the empty Settings."""
    path = root.plugin_settings(name)
    if not path.is_file():
        return Settings()
    data = read_json(path)
    if not isinstance(data, dict):
        raise GokkuError(f"{path} must hold a JSON object")
    config = data.get("config") or {}
    return Settings(
        config={str(k): str(v) for k, v in config.items()} if isinstance(config, dict) else {},
        pin=str(data["pin"]) if data.get("pin") else None,
        disabled=bool(data.get("disabled")),
    )


def change(root: Root, name: str, edit: Callable[[dict[str, Any]], None]) -> None:
    """Read the settings, let ``edit`` change them, write them back (the caller holds the
    plugin's lock)."""
    path = root.plugin_settings(name)
    data = read_json(path) if path.is_file() else {}
    data = data if isinstance(data, dict) else {}
    edit(data)
    path.parent.mkdir(mode=0o700, exist_ok=True)
    write_json(path, data)


def forget(root: Root, name: str) -> None:
    """Remove the plugin's settings (it is removed, or installed anew)."""
    path = root.plugin_settings(name)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        fsync_dir(path.parent)


def declared(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings the plugin declares (``config`` in plugin.yml, copied to its record)."""
    section = record.get("config")
    return section if isinstance(section, dict) else {}


def check_key(plugin: str, record: dict[str, Any], key: str) -> str:
    """``key`` when the plugin declares it; else a usage error naming the closest one."""
    keys = sorted(declared(record))
    if key in keys:
        return key
    if not keys:
        raise UsageError(f"plugin {plugin!r} declares no settings (config: in its plugin.yml)")
    import difflib

    close = difflib.get_close_matches(key.upper(), keys, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else f" (it has {', '.join(keys)})"
    raise UsageError(f"plugin {plugin!r} has no setting {key[:64]!r}{hint}")


def values(record: dict[str, Any], settings: Settings) -> dict[str, str]:
    """Each declared setting's value: the one set, else its default (none: left out)."""
    found = {}
    for key, declaration in declared(record).items():
        value = settings.config.get(key, declaration.get("default"))
        if value is not None:
            found[key] = str(value)
    return found


def secret_values(record: dict[str, Any], settings: Settings) -> list[str]:
    declarations = declared(record)
    return [v for k, v in values(record, settings).items() if declarations[k].get("secret")]


def config_env(record: dict[str, Any], settings: Settings) -> dict[str, str]:
    """What a plugin's scripts get: ``GOKKU_CONFIG_<KEY>`` for each setting with a value."""
    return {CONFIG_PREFIX + k: v for k, v in values(record, settings).items()}
