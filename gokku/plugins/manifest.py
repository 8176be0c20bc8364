"""What a plugin's ``plugin.yml`` declares: each command's terminal and streams, the
settings an admin may give it, and what it needs (plugins, Debian packages).

```yaml
version: 1.0.0
description: PostgreSQL databases
commands:
  export:  {stdout: binary}          # bytes on stdout: never through a pty
  import:  {stdin: data}             # reads data from stdin: refuse a terminal there
  connect: {tty: prefer}             # interactive: a pty when the client asked for one
  info:    {access: read, secret: [DSN]}  # who may run it (below); its secret "Field:" lines
  status:  {usage: SERVICE, summary: running or stopped}   # for status --help (below)
config:                              # settings an admin sets with plugins:config:set
  BACKUP_BUCKET: {description: where backups go}
  API_TOKEN: {secret: true}          # never shown by plugins:config nor audited
  RETRIES: {default: 3}
requires: {postgres: ">=1.0"}        # plugins it needs (plugins:remove refuses to break it)
system_packages: [postgresql-client] # Debian packages (plugins:install-dependencies)
```

``access`` is checked against the service the first argument names: ``write`` (the
default) needs write access to it, ``read`` (the default of info and logs) read access,
``admin`` an admin key, ``any`` nothing (``help`` by default: it is documentation).
``secret`` names the ``Field:`` lines of the command's output whose values a caller who
may not write the service never sees (``gokku.redact``, which also masks passwords the
plugin did not declare).

``usage`` (the arguments after ``PLUGIN:CMD``) and ``summary`` are what ``PLUGIN:CMD
--help`` and ``help PLUGIN:CMD`` print. A usage whose first word is ``SERVICE`` (or
``SVC``) tells Gokku that the first argument names a service, so that one that does not
exist is refused before the script runs, with a did-you-mean. A usage that names
``-a APP`` (or ``[-a] APP``) tells it that ``-a APP`` after the command is the app
(``GOKKU_APP``), as before it; any other command gets such words as its own arguments.

The declarations are copied into the install record, so routing never parses YAML.
Plugins without a manifest keep the defaults: a pty when the client asked, no checks.
"""

import re
from typing import Any, NamedTuple

from gokku.errors import GokkuError
from gokku.names import is_name
from gokku.plugins.semver import Range

TTY_MODES = ("never", "allow", "prefer")
STDOUT_MODES = ("text", "binary")
STDIN_MODES = ("none", "data", "terminal", "any")
ACCESS_LEVELS = ("read", "write", "admin", "any")
DEFAULT_ACCESS = {"help": "any", "info": "read", "logs": "read"}
SETTINGS = ("tty", "stdout", "stdin", "access", "description", "usage", "summary", "secret")
# The first word of a usage that names a service (Dokku's plugins write <service>).
SERVICE_WORDS = ("SERVICE", "SVC", "<service>")
# A usage that names the app option: ``-a APP``, ``[-a APP]``, ``[-a] APP``.
APP_OPTION = re.compile(r"(?<![\w-])-a\]? APP\b")
# A setting becomes the variable GOKKU_CONFIG_<KEY>: its name is a variable name's tail.
CONFIG_KEY = re.compile(r"[A-Z][A-Z0-9_]{0,63}")
CONFIG_FIELDS = ("default", "description", "secret")
# Debian policy: lowercase letters, digits, + - . ; at least two, starting alphanumeric.
DEBIAN_PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]{1,99}")


class CommandIO(NamedTuple):
    """How a plugin command uses the terminal and its streams (its manifest's ``io``)."""

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
        unknown = set(settings) - set(SETTINGS)
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


def parse_config(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Validate the ``config`` section: each KEY's default (a scalar, kept as the text
    the script will see), description and whether it is secret."""
    section = manifest.get("config") or {}
    if not isinstance(section, dict):
        raise GokkuError("plugin.yml: 'config' must map setting names to {default, ...}")
    result: dict[str, dict[str, Any]] = {}
    for key, settings in section.items():
        if not isinstance(key, str) or not CONFIG_KEY.fullmatch(key):
            raise GokkuError(
                f"plugin.yml: config key {str(key)[:64]!r} must be uppercase letters, digits "
                "and '_', starting with a letter (it becomes GOKKU_CONFIG_<KEY>)"
            )
        settings = settings or {}
        if not isinstance(settings, dict):
            raise GokkuError(f"plugin.yml: config {key}: must be a mapping ({{default: ...}})")
        unknown = set(settings) - set(CONFIG_FIELDS)
        if unknown:
            raise GokkuError(
                f"plugin.yml: config {key} has unknown keys {sorted(map(str, unknown))}"
            )
        default = settings.get("default")
        if isinstance(default, (dict, list)):
            raise GokkuError(f"plugin.yml: config {key}: default must be a single value")
        if not isinstance(settings.get("description", ""), str):
            raise GokkuError(f"plugin.yml: config {key}: description must be text")
        if not isinstance(settings.get("secret", False), bool):
            raise GokkuError(f"plugin.yml: config {key}: secret must be true or false")
        result[key] = {
            "default": None if default is None else _scalar_text(default),
            "description": settings.get("description", ""),
            "secret": settings.get("secret", False),
        }
    return result


def _scalar_text(value: Any) -> str:
    """YAML's ``true`` and ``3`` as a script reads them: ``true``, ``3``."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_requires(manifest: dict[str, Any]) -> dict[str, str]:
    """``requires: {PLUGIN: RANGE}``: the plugins this one needs, by name."""
    section = manifest.get("requires") or {}
    if not isinstance(section, dict) or not all(
        isinstance(name, str) and is_name(name) and isinstance(wanted, (str, int, float))
        for name, wanted in section.items()
    ):
        raise GokkuError("plugin.yml: 'requires' must map plugin names to version ranges")
    for wanted in section.values():
        Range.parse(str(wanted))
    return {name: str(wanted) for name, wanted in section.items()}


def parse_system_packages(manifest: dict[str, Any]) -> list[str]:
    """``system_packages: [NAME...]``: Debian packages, by name."""
    section = manifest.get("system_packages") or []
    if not isinstance(section, list):
        raise GokkuError("plugin.yml: 'system_packages' must be a list of Debian package names")
    for name in section:
        if not isinstance(name, str) or not DEBIAN_PACKAGE.fullmatch(name):
            raise GokkuError(
                f"plugin.yml: system package {str(name)[:64]!r} is not a Debian package name"
            )
    return list(section)


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


def command_usage(record: dict[str, Any], command: str) -> tuple[str, str] | None:
    """The ``usage`` and ``summary`` plugin.yml declares for ``command``, if any."""
    settings = (record.get("commands_io") or {}).get(command) or {}
    if "usage" not in settings and "summary" not in settings:
        return None
    return settings.get("usage", ""), settings.get("summary", "")


def takes_service(record: dict[str, Any], command: str) -> bool:
    """Whether ``command``'s declared usage starts with a service (``SERVICE [--dsn]``,
    ``SERVICE|--all``)."""
    declared = command_usage(record, command)
    words = declared[0].split() if declared else []
    return bool(words) and any(w in SERVICE_WORDS for w in words[0].split("|"))


def takes_app_option(record: dict[str, Any], command: str) -> bool:
    """Whether ``command``'s declared usage names ``-a APP``: only then is ``-a APP``
    after the command the app (``redis:connect c -a PASS`` means the script's own -a)."""
    declared = command_usage(record, command)
    return bool(declared) and APP_OPTION.search(declared[0]) is not None


def requirements(tree_manifest: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """plugin.yml's ``gokku:`` range and ``requires:`` map, checked."""
    gokku_range = str(tree_manifest.get("gokku") or "*")
    Range.parse(gokku_range)
    return gokku_range, parse_requires(tree_manifest)
