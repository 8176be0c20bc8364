"""``help`` and ``version``.

``help`` alone lists every built-in and plugin; ``help TOPIC`` narrows it to one built-in
namespace (``help config``, also ``config:help``), one plugin (its own help script) or one
built-in command (its usage, also ``CMD --help``).
"""

from gokku import __version__
from gokku.commands import (
    BUILTINS,
    NAMESPACES,
    PLUGIN_FORMS,
    Builtin,
    namespace_verbs,
    usage_line,
)
from gokku.context import Context
from gokku.errors import UsageError


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
    _rows(ctx, [b for b in BUILTINS.values() if not b.hidden])
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
    from gokku.dispatcher import did_you_mean, route
    from gokku.plugins import registry

    builtin = BUILTINS.get(topic)
    if builtin is not None and not builtin.hidden:
        return usage(ctx, usage_line(topic), builtin.summary)
    namespace, _, command = topic.partition(":")
    if namespace in NAMESPACES and command in ("", "help"):
        return namespace_help(ctx, namespace, [])
    if registry.find(ctx.root, namespace) is not None:
        return route(ctx, f"{namespace}:help", [])
    raise UsageError(f"no help on {topic!r}{did_you_mean(ctx, topic)}")


def _rows(ctx: Context, builtins: list[Builtin]) -> None:
    width = max(len(b.usage) for b in builtins)
    for builtin in builtins:
        ctx.out(f"  {builtin.usage.ljust(width)}  {builtin.summary}")


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
    _rows(ctx, [BUILTINS[verb] for verb in namespace_verbs(namespace)])
    if namespace == "services":
        ctx.out("")
        ctx.out("=====> Dokku's forms, for every plugin without a script of that name")
        _rows(ctx, list(PLUGIN_FORMS.values()))
    return 0


def version(ctx: Context, args: list[str]) -> int:
    ctx.out(f"gokku {__version__}")
    return 0
