"""``PLUGIN:CMD ARGS...``: run a plugin's own command script with the user's argv."""

import difflib

from gokku import services
from gokku.context import Context
from gokku.errors import GokkuError, UnknownCommand
from gokku.names import NAME_RE
from gokku.plugins.registry import Plugin
from gokku.runner import run_script


def run_plugin_command(ctx: Context, plugin: Plugin, command: str, args: list[str]) -> int:
    script = plugin.script(command)
    if script is None:
        if command == "help":
            return _generated_help(ctx, plugin)
        close = difflib.get_close_matches(command, plugin.commands(), n=1, cutoff=0.6)
        hint = f"; did you mean '{plugin.name}:{close[0]}'?" if close else ""
        raise UnknownCommand(
            f"plugin {plugin.name!r} has no command {command!r}{hint} "
            f"(see: gokku {plugin.name}:help)"
        )
    extra = {}
    if args and NAME_RE.match(args[0]) and services.exists(ctx.root, args[0]):
        owner = services.load(ctx.root, args[0]).plugin
        if owner != plugin.name:
            raise GokkuError(
                f"service {args[0]!r} belongs to plugin {owner!r}, not {plugin.name!r}"
            )
        extra["SERVICE_NAME"] = args[0]
        extra["GOKKU_SERVICE_DIR"] = str(ctx.root.service_dir(args[0]))
    return run_script(ctx, plugin, script, args, extra)


def _generated_help(ctx: Context, plugin: Plugin) -> int:
    ctx.out(f"=====> {plugin.name} commands")
    for command in plugin.commands():
        ctx.out(f"  {plugin.name}:{command}")
    return 0
