"""``help`` and ``version``."""

from gokku import __version__
from gokku.commands import BUILTINS
from gokku.context import Context


def help(ctx: Context, args: list[str]) -> int:  # noqa: A001 - the verb is "help"
    from gokku.dispatcher import GLOBAL_USAGE, route
    from gokku.plugins import registry

    if args:
        return route(ctx, f"{args[0].split(':')[0]}:help", [])
    ctx.out(f"Usage: {GLOBAL_USAGE}")
    ctx.out("")
    ctx.out("=====> Built-in commands")
    visible = [(verb, b) for verb, b in BUILTINS.items() if not b.hidden]
    width = max(len(b.usage) for _, b in visible)
    for _verb, builtin in visible:
        ctx.out(f"  {builtin.usage.ljust(width)}  {builtin.summary}")
    plugins = registry.installed(ctx.root)
    ctx.out("")
    ctx.out("=====> Plugins")
    if not plugins:
        ctx.out("  (none installed: gokku plugins:add SOURCE)")
    for plugin in plugins:
        alias = f" ({plugin.namespace})" if plugin.namespace else ""
        description = plugin.description() or "see: gokku " + plugin.name + ":help"
        ctx.out(f"  {plugin.name}{alias}: {description}")
    return 0


def version(ctx: Context, args: list[str]) -> int:
    ctx.out(f"gokku {__version__}")
    return 0
