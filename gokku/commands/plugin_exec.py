"""``PLUGIN:CMD ARGS...``: run a plugin's own command script with the user's argv."""

import difflib
import os

from gokku import services
from gokku.context import Context
from gokku.errors import GokkuError, UnknownCommand, UsageError
from gokku.names import NAME_RE
from gokku.plugins.registry import Plugin
from gokku.runner import run_script


def run_plugin_command(
    ctx: Context, plugin: Plugin, namespace: str, command: str, args: list[str]
) -> int:
    """Run ``NAMESPACE:COMMAND``; ``namespace`` is what the user typed (name or alias)."""
    script = plugin.script(command)
    if script is None:
        close = difflib.get_close_matches(command, plugin.commands(), n=1, cutoff=0.6)
        hint = f"; did you mean '{namespace}:{close[0]}'?" if close else ""
        raise UnknownCommand(
            f"plugin {plugin.name!r} has no command {command!r}{hint} (see: gokku {namespace}:help)"
        )
    io = plugin.io(command)
    if io.stdin == "data" and os.isatty(ctx.request.stdin.fileno()):
        raise UsageError(
            f"{namespace}:{command} reads data from standard input: pipe it in, "
            f"e.g. gokku {namespace}:{command} {' '.join(args)} < FILE".rstrip()
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
    return run_script(ctx, plugin, script, args, extra, raw_terminal=not io.pty_allowed)
