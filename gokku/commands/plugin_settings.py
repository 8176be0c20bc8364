"""What admins set on an installed plugin: ``plugins:config*``, ``plugins:pin``/``unpin``,
``plugins:disable``/``enable``; and ``plugins:install-dependencies`` (root, on the server).
"""

import functools
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gokku.cmdline import parse
from gokku.commands import read_assignments, usage_line
from gokku.context import Context
from gokku.errors import GokkuError, UsageError
from gokku.names import check_name
from gokku.plugins import registry, settings, system_packages
from gokku.storage import lock

# A version or a range as one word: 1.4.2, ~1.4, ^2, >=1.2 (what the index resolves).
PIN = re.compile(r"[0-9A-Za-z~^<>=][0-9A-Za-z.+~^*<>=_-]{0,63}")


@contextmanager
def _locked(ctx: Context, word: str) -> Iterator[registry.Plugin]:
    """The installed plugin ``word`` names, under its lock (the one add/update/remove
    take), so that what is decided on is what gets written."""
    name = check_name("plugin", word)
    with lock(ctx.root.locks, f"plugin-{name}"):
        yield registry.load(ctx.root, name)


# ---- plugins:config, plugins:config:set, plugins:config:unset ----


def config(ctx: Context, args: list[str]) -> int:
    opts = parse(
        args, usage_line("plugins:config"), values={"--format": "format"}, min_args=1, max_args=1
    )
    plugin = registry.load(ctx.root, check_name("plugin", opts.positional[0]))
    current = settings.values(plugin.record, plugin.settings)
    records = []
    for key, declaration in sorted(settings.declared(plugin.record).items()):
        value = current.get(key)
        secret = bool(declaration.get("secret"))
        records.append(
            {
                "key": key,
                "value": settings.REDACTED if secret and value else value,
                "set": key in plugin.settings.config,
                "secret": secret,
                "description": declaration.get("description") or "",
            }
        )
    ctx.listing(
        opts.get("format", ctx.format),
        records,
        f"plugin {plugin.name} declares no settings",
        ["KEY", "VALUE", "FROM", "DESCRIPTION"],
        lambda r: [
            r["key"],
            "-" if r["value"] is None else r["value"],
            "set" if r["set"] else ("default" if r["value"] is not None else "-"),
            r["description"],
        ],
    )
    return 0


def config_set(ctx: Context, args: list[str]) -> int:
    usage = usage_line("plugins:config:set")
    opts = parse(args, usage, flags={"--stdin": "stdin"}, min_args=1)
    name, *words = opts.positional
    with _locked(ctx, name) as plugin:
        check = functools.partial(settings.check_key, plugin.name, plugin.record)
        given = read_assignments(ctx, opts, words, usage, check)
        settings.change(ctx.root, plugin.name, lambda d: d.setdefault("config", {}).update(given))
    ctx.info(f"Set {', '.join(given)} for plugin {plugin.name}")
    return 0


def config_unset(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("plugins:config:unset"), min_args=2)
    name, *keys = opts.positional
    with _locked(ctx, name) as plugin:
        keys = [settings.check_key(plugin.name, plugin.record, key) for key in keys]

        def unset(data: dict[str, Any]) -> None:
            for key in keys:
                data.get("config", {}).pop(key, None)

        settings.change(ctx.root, plugin.name, unset)
    ctx.info(f"Unset {', '.join(keys)} for plugin {plugin.name} (defaults apply)")
    return 0


# ---- plugins:pin, plugins:unpin ----


def pin(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("plugins:pin"), min_args=1, max_args=2)
    name, *version = opts.positional
    if version and not _is_pin(version[0]):
        raise UsageError(f"{version[0][:64]!r} is not a version (1.4.2) or a range (~1.4)")
    with _locked(ctx, name) as plugin:
        wanted = version[0] if version else str(plugin.record.get("version") or "")
        if not wanted:
            raise UsageError(
                f"plugin {plugin.name} declares no version: give one (gokku plugins:pin "
                f"{plugin.name} VERSION)"
            )
        settings.change(ctx.root, plugin.name, lambda data: data.update(pin=wanted))
    said = "updates leave it alone"
    if not settings.Settings(pin=wanted).frozen:
        said = "updates through an index move it only within that range"
    ctx.info(f"Pinned plugin {plugin.name} at {wanted}: {said}")
    return 0


def _is_pin(text: str) -> bool:
    """A version or a range the resolver reads: refused now rather than at the next update
    (``abc`` passes the characters' check)."""
    from gokku.plugins import semver

    if not PIN.fullmatch(text):
        return False
    try:
        semver.Range.parse(text)
    except GokkuError:
        return False
    return True


def unpin(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("plugins:unpin"), min_args=1, max_args=1)
    with _locked(ctx, opts.positional[0]) as plugin:
        settings.change(ctx.root, plugin.name, lambda data: data.pop("pin", None))
    ctx.info(f"Plugin {plugin.name} is not pinned")
    return 0


# ---- plugins:disable, plugins:enable ----


def disable(ctx: Context, args: list[str]) -> int:
    return _set_disabled(ctx, args, "plugins:disable", True)


def enable(ctx: Context, args: list[str]) -> int:
    return _set_disabled(ctx, args, "plugins:enable", False)


def _set_disabled(ctx: Context, args: list[str], verb: str, disabled: bool) -> int:
    """Disabled: installed, its services and their servers as they are, but none of its
    code runs (commands, hooks, deploy triggers, services:start --all) until enabled."""
    opts = parse(args, usage_line(verb), min_args=1, max_args=1)
    state = "disabled" if disabled else "enabled"
    with _locked(ctx, opts.positional[0]) as plugin:
        if plugin.disabled == disabled:
            ctx.info(f"Plugin {plugin.name} is already {state}")
            return 0
        settings.change(ctx.root, plugin.name, lambda data: data.update(disabled=disabled))
    ctx.info(f"Plugin {plugin.name} {state}")
    return 0


# ---- plugins:install-dependencies ----


def install_dependencies(ctx: Context, args: list[str]) -> int:
    """The dispatcher lets this verb only through the server's own CLI, and keeps root
    there (``KEEPS_ROOT``): apt-get needs it."""
    usage = usage_line("plugins:install-dependencies")
    opts = parse(args, usage, min_args=1, max_args=1)
    plugin = registry.load(ctx.root, check_name("plugin", opts.positional[0]))
    if os.geteuid() != 0:
        raise GokkuError(
            "plugins:install-dependencies installs Debian packages: run it as root "
            f"(sudo gokku plugins:install-dependencies {plugin.name})"
        )
    system_packages.install(ctx, plugin)
    return 0
