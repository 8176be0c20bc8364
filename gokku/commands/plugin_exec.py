"""``PLUGIN:CMD ARGS...``: run a plugin's own command script with the user's argv."""

import os
from pathlib import Path

from gokku import access, services, suggest
from gokku.commands import plugin_commands
from gokku.context import Context
from gokku.errors import AccessDenied, GokkuError, UnknownCommand, UsageError
from gokku.names import is_name
from gokku.plugins.registry import LIFECYCLE, Plugin
from gokku.runner import run_script


def run_plugin_command(
    ctx: Context, plugin: Plugin, namespace: str, command: str, args: list[str]
) -> int:
    """Run ``NAMESPACE:COMMAND``; ``namespace`` is what the user typed (name or alias)."""
    script = script_of(plugin, namespace, command)
    service = _service_of(ctx, plugin, command, args)
    authorize(ctx, plugin, f"{namespace}:{command}", command, service)
    io = plugin.io(command)
    # A terminal on stdin: nothing was piped in, or (sshd's pty, ssh -tt ... < dump) the
    # data would come through a terminal, which ends it at no EOF. The embedded server
    # gives such a command no pty, so there the data arrives as it was sent.
    if io.stdin == "data" and os.isatty(ctx.request.stdin.fileno()):
        raise UsageError(
            f"{namespace}:{command} reads data from standard input: pipe it in, "
            f"e.g. gokku {namespace}:{command} {' '.join(args)} < FILE".rstrip()
        )
    extra = {}
    if service is not None:
        extra["SERVICE_NAME"] = service
        extra["GOKKU_SERVICE_DIR"] = str(ctx.root.service_dir(service))
    return run_script(ctx, plugin, script, args, extra, io)


def script_of(plugin: Plugin, namespace: str, command: str) -> Path:
    """The script ``NAMESPACE:COMMAND`` runs, or UnknownCommand with a plausible hint."""
    script = None if command in LIFECYCLE else plugin.script(command)
    if script is None:
        hint = suggest.plugin_command(namespace, command, plugin_commands(plugin))
        raise UnknownCommand(
            f"plugin {plugin.name!r} has no command {command!r}{hint} (see: gokku {namespace}:help)"
        )
    return script


def _service_of(ctx: Context, plugin: Plugin, command: str, args: list[str]) -> str | None:
    """The service the first argument names, when it is one of this plugin's. A command
    whose declared usage starts with a service refuses a name that is none, with the
    closest one the caller may see (the dispatcher adds it)."""
    if not args or not is_name(args[0]):
        return None
    if not services.exists(ctx.root, args[0]):
        if plugin.takes_service(command):
            services.load(ctx.root, args[0])  # NotFound, naming the service
        return None
    owner = services.load(ctx.root, args[0]).plugin
    if owner != plugin.name:
        raise GokkuError(f"service {args[0]!r} belongs to plugin {owner!r}, not {plugin.name!r}")
    return args[0]


def authorize(ctx: Context, plugin: Plugin, verb: str, command: str, service: str | None) -> None:
    """The command's declared access (plugin.yml), checked against its service, whether
    it is called as ``PLUGIN:CMD`` or through ``services:info|logs|start|stop``."""
    level = plugin.access(command)
    if level == access.ANY:
        return
    if level == access.ADMIN:
        access.require_admin(ctx, f"run {verb}")
    elif service is not None:
        access.require(ctx, "service", service, level)
    elif ctx.request.identity.role != access.ADMIN:
        name = ctx.request.identity.name
        raise AccessDenied(
            f"{name} may not run {verb} without naming a {plugin.name} service it may "
            f"{level}: ask an admin for access:grant {name} service:SVC"
        )
