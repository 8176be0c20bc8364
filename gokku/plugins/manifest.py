"""What a plugin's ``plugin.yml`` declares about each command's terminal and streams.

```yaml
version: 1.0.0
description: PostgreSQL databases
commands:
  export:  {stdout: binary}          # bytes on stdout: never through a pty
  import:  {stdin: data}             # reads data from stdin: refuse a terminal there
  connect: {tty: prefer}             # interactive: a pty when the client asked for one
  info:    {access: read, secret: [DSN]}  # who may run it; its secret "Field:" lines
```

``access`` is checked against the service the first argument names: ``write`` (the
default) needs write access to it, ``read`` (the default of info and logs) read access,
``admin`` an admin key, ``any`` nothing (``help`` by default: it is documentation).
``secret`` names the ``Field:`` lines of the command's output whose values a caller who
may not write the service never sees (``gokku.redact``, which also masks passwords the
plugin did not declare).

The declarations are copied into the install record, so routing never parses YAML.
Plugins without a manifest keep the defaults: a pty when the client asked, no checks.
"""

from dataclasses import dataclass
from typing import Any

from gokku.errors import GokkuError
from gokku.names import check_name
from gokku.plugins.semver import Range

TTY_MODES = ("never", "allow", "prefer")
STDOUT_MODES = ("text", "binary")
STDIN_MODES = ("none", "data", "terminal", "any")
ACCESS_LEVELS = ("read", "write", "admin", "any")
DEFAULT_ACCESS = {"help": "any", "info": "read", "logs": "read"}


@dataclass(frozen=True)
class CommandIO:
    tty: str = "allow"
    stdout: str = "text"
    stdin: str = "any"

    @property
    def pty_allowed(self) -> bool:
        """Binary output, data input and declared no-tty commands never run under a
        terminal: its line discipline would rewrite bytes, echo them, and take 0x03 for
        Ctrl-C."""
        return self.tty != "never" and self.stdout != "binary" and self.stdin != "data"


def parse_commands(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate the ``commands`` section; return it as plain data for the record."""
    section = manifest.get("commands") or {}
    if not isinstance(section, dict):
        raise GokkuError("plugin.yml: 'commands' must map command names to settings")
    result: dict[str, dict[str, Any]] = {}
    for command, settings in section.items():
        settings = settings or {}
        if not isinstance(settings, dict):
            raise GokkuError(f"plugin.yml: settings of command {command!r} must be a mapping")
        unknown = set(settings) - {"tty", "stdout", "stdin", "access", "description", "secret"}
        if unknown:
            raise GokkuError(f"plugin.yml: command {command!r} has unknown keys {sorted(unknown)}")
        checks = (
            ("tty", TTY_MODES),
            ("stdout", STDOUT_MODES),
            ("stdin", STDIN_MODES),
            ("access", ACCESS_LEVELS),
        )
        for key, allowed in checks:
            if key in settings and settings[key] not in allowed:
                raise GokkuError(
                    f"plugin.yml: command {command!r}: {key} must be one of {', '.join(allowed)}"
                )
        declared: dict[str, Any] = {k: str(v) for k, v in settings.items() if k != "secret"}
        if "secret" in settings:
            declared["secret"] = _fields(command, settings["secret"])
        result[str(command)] = declared
    return result


def _fields(command: str, value: Any) -> list[str]:
    """``secret: [DSN, Password]``: names of ``Field:`` lines, as the output spells them."""
    if not isinstance(value, list) or not all(
        isinstance(f, str) and f.strip() and ":" not in f and "\n" not in f for f in value
    ):
        raise GokkuError(
            f"plugin.yml: command {command!r}: secret must be a list of field names (DSN...)"
        )
    return [f.strip() for f in value]


def command_io(record: dict[str, Any], command: str) -> CommandIO:
    settings = (record.get("commands_io") or {}).get(command) or {}
    fields = {k: v for k, v in settings.items() if k in ("tty", "stdout", "stdin")}
    return CommandIO(**fields)


def command_secrets(record: dict[str, Any], command: str) -> list[str]:
    """The ``Field:`` lines of ``command``'s output that hold secrets (plugin.yml)."""
    settings = (record.get("commands_io") or {}).get(command) or {}
    fields = settings.get("secret")
    return [str(f) for f in fields] if isinstance(fields, list) else []


def command_access(record: dict[str, Any], command: str) -> str:
    """Who may run ``command``: its ``access`` in plugin.yml, else the default."""
    settings = (record.get("commands_io") or {}).get(command) or {}
    return settings.get("access") or DEFAULT_ACCESS.get(command, "write")


def requirements(tree_manifest: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """plugin.yml's ``gokku:`` range and ``requires:`` map, checked."""
    gokku_range = str(tree_manifest.get("gokku") or "*")
    Range.parse(gokku_range)
    requires = tree_manifest.get("requires") or {}
    if not isinstance(requires, dict):
        raise GokkuError("plugin.yml: 'requires' must map plugin names to version ranges")
    checked = {}
    for name, wanted in requires.items():
        check_name("plugin", str(name))
        Range.parse(str(wanted))
        checked[str(name)] = str(wanted)
    return gokku_range, checked
