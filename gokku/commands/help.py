"""``help`` and ``version``.

``help`` alone lists the built-ins the caller may run and every plugin; ``help TOPIC``
narrows it to one built-in namespace (``help config``, also ``config:help``), one plugin
(its own help script) or one command (its usage, also ``CMD --help``): a built-in's from
the command table, a plugin command's from its ``plugin.yml``, else from the lines of the
plugin's help that name it.
"""

import re
import signal
import subprocess
from typing import TYPE_CHECKING

from gokku import __version__, access
from gokku.commands import (
    BUILTINS,
    NAMESPACES,
    PLUGIN_FORMS,
    Builtin,
    form_usage,
    namespace_verbs,
    usage_line,
)
from gokku.context import Context
from gokku.errors import UsageError

if TYPE_CHECKING:
    from gokku.plugins.registry import Plugin

# How long a plugin's help script may take when Gokku reads it for one command's lines.
HELP_SECONDS = 5
# The widest usage column of a help page (the plugins' help_rows too): a longer usage has
# a line of its own and its summary the next, so that one long usage does not push every
# summary past the width of a terminal.
USAGE_COLUMN = 48


def help(ctx: Context, args: list[str]) -> int:  # noqa: A001 - the verb is "help"
    if len(args) > 1:
        raise UsageError(f"unexpected argument {args[1]!r}; usage: {usage_line('help')}")
    if args:
        return _topic(ctx, args[0])
    from gokku.dispatcher import GLOBAL_USAGE
    from gokku.plugins import registry

    ctx.out(f"Usage: {GLOBAL_USAGE}")
    ctx.out("Help on one topic: gokku help config, gokku help PLUGIN, gokku COMMAND --help")
    ctx.out("")
    ctx.out("=====> Built-in commands")
    _rows(ctx, _allowed(ctx, [verb for verb, b in BUILTINS.items() if not b.hidden]))
    installed = registry.installed(ctx.root)
    plugins = [p for p in installed if not p.disabled]  # a disabled one has no commands
    ctx.out("")
    ctx.out("=====> Plugins")
    if not installed:
        ctx.out("  (none installed: gokku plugins:add SOURCE)")
    if len(plugins) < len(installed):
        ctx.out(f"  ({len(installed) - len(plugins)} disabled: see gokku plugins:list)")
    for plugin in plugins:
        alias = f" ({plugin.namespace})" if plugin.namespace else ""
        description = plugin.description() or "see: gokku " + plugin.name + ":help"
        ctx.out(f"  {plugin.name}{alias}: {description}")
    return 0


def _topic(ctx: Context, topic: str) -> int:
    from gokku.dispatcher import route
    from gokku.plugins import registry
    from gokku.suggest import hint

    builtin = BUILTINS.get(topic)
    if builtin is not None and not builtin.hidden:
        access.check_verb(ctx, topic, builtin.access)
        return usage(ctx, usage_line(topic), builtin.summary)
    namespace, _, command = topic.partition(":")
    if namespace in NAMESPACES and command in ("", "help"):
        return namespace_help(ctx, namespace, [])
    plugin = registry.find(ctx.root, namespace)
    if plugin is not None and command in ("", "help"):
        return route(ctx, f"{namespace}:help", [])
    if plugin is not None:
        return plugin_command(ctx, plugin, namespace, command)
    raise UsageError(f"no help on {topic!r}{hint(ctx, topic)}")


def _allowed(ctx: Context, verbs: list[str]) -> list[Builtin]:
    """The table rows of ``verbs`` the caller may run: a member sees no admin verbs, an
    SSH caller not the doors' own (``serve``)."""
    identity = ctx.request.identity
    table = {**BUILTINS, **{f"PLUGIN:{c}": f for c, f in PLUGIN_FORMS.items()}}
    return [table[v] for v in verbs if access.verb_allowed(identity, table[v].access)]


def _rows(ctx: Context, builtins: list[Builtin]) -> None:
    if not builtins:
        ctx.out("  (none your key may run: ask an admin)")
        return
    width = min(max(len(b.usage) for b in builtins), USAGE_COLUMN)
    for builtin in builtins:
        if len(builtin.usage) > width:
            ctx.out(f"  {builtin.usage}")
            ctx.out(f"  {'':{width}}  {builtin.summary}")
        else:
            ctx.out(f"  {builtin.usage:{width}}  {builtin.summary}")


def usage(ctx: Context, line: str, summary: str) -> int:
    """One command's help (``CMD --help``): on stdout, exit 0, as a help page is."""
    ctx.out(f"Usage: {line}")
    ctx.out("")
    ctx.out(summary)
    return 0


def namespace_help(ctx: Context, namespace: str, args: list[str]) -> int:
    """``help config``, ``config:help``, ``config``: the namespace's commands."""
    if args:
        raise UsageError(f"unexpected argument {args[0]!r}; usage: gokku {namespace}:help")
    ctx.out(f"=====> {namespace} commands")
    _rows(ctx, _allowed(ctx, namespace_verbs(namespace)))
    if namespace == "services":
        ctx.out("")
        ctx.out("=====> Dokku's forms, for every plugin without a script of that name")
        _rows(ctx, _allowed(ctx, [f"PLUGIN:{command}" for command in PLUGIN_FORMS]))
    return 0


def plugin_command(ctx: Context, plugin: "Plugin", namespace: str, command: str) -> int:
    """``PLUGIN:CMD --help`` and ``help PLUGIN:CMD``: the command's usage, nothing run
    (a Dokku form's from the command table)."""
    from gokku.commands.plugin_exec import run_plugin_command, script_of

    verb = f"{namespace}:{command}"
    form = PLUGIN_FORMS.get(command)
    if form is not None and plugin.script(command) is None:
        access.check_verb(ctx, verb, form.access)
        return usage(ctx, form_usage(verb), form.summary)
    script_of(plugin, namespace, command)
    if command == "help":
        return run_plugin_command(ctx, plugin, namespace, command, [])
    if plugin.access(command) == access.ADMIN:
        access.require_admin(ctx, f"run {verb}")
    declared = plugin.usage(command)
    if declared is not None:
        return usage(ctx, f"gokku {verb} {declared[0]}".rstrip(), declared[1])
    lines = _help_lines(ctx, plugin, command)
    unnamed = f"{verb}: its plugin's help does not name it (see: gokku {namespace}:help)"
    ctx.out("\n".join(lines) or unnamed)
    return 0


def _help_lines(ctx: Context, plugin: "Plugin", command: str) -> list[str]:
    """The lines of the plugin's help that name ``command`` (``postgres:export``, or
    ``pg:start|stop|restart`` for ``stop``), as the help script prints them."""
    from gokku.runner import forward_to_group, spawn_captured

    script = plugin.script("help")
    if script is None:
        return []
    proc = spawn_captured(ctx, plugin, script, [])
    try:
        out, _ = proc.communicate(timeout=HELP_SECONDS)
    except subprocess.TimeoutExpired:
        forward_to_group(proc.pid, signal.SIGKILL)  # before the wait reaps the group's leader
        proc.stdout.close()
        proc.wait()
        out = b""
    names = "|".join(re.escape(n) for n in filter(None, (plugin.name, plugin.namespace)))
    named = re.compile(rf"(?<![\w-])(?:{names}):([\w|-]+)")
    lines = out.decode(errors="replace").splitlines()
    found = []
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        if any(command in m.split("|") for m in named.findall(line)):
            found.append(line.strip())
            # A usage too wide for the column (help_rows): its summary is the next line.
            if "  " not in line.strip() and after.startswith(" " * (USAGE_COLUMN + 4)):
                found.append(after.strip())
    return found


def version(ctx: Context, args: list[str]) -> int:
    ctx.out(f"gokku {__version__}")
    return 0
