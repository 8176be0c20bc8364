"""``PLUGIN:CMD ARGS...``: run a plugin's own command script with the user's argv."""

import os
from pathlib import Path

from gokku import access, redact, services
from gokku.commands import plugin_commands
from gokku.context import Context
from gokku.errors import AccessDenied, GokkuError, UnknownCommand, UsageError
from gokku.names import check_name, is_name
from gokku.plugins.manifest import CommandIO
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
    return run_for(ctx, plugin, command, script, args, service, io)


def app_after_verb(ctx: Context, plugin: Plugin, command: str, args: list[str]) -> list[str]:
    """``args`` without ``-a APP``/``--app APP``, which name the app (``ctx.app``,
    ``GOKKU_APP``) as they do before the verb, when the command's declared usage names
    ``-a APP``; otherwise ``args`` unchanged: the words are the script's own."""
    if not plugin.takes_app_option(command):
        return args
    rest: list[str] = []
    words = iter(args)
    for word in words:
        if word == "--":
            rest += [word, *words]
            break
        name, eq, inline = word.partition("=")
        if name not in ("-a", "--app"):
            rest.append(word)
            continue
        app = inline if eq else next(words, None)
        if not app:
            raise UsageError(f"option {name} needs an app's name: {name} APP")
        ctx.app = check_name("app", app)
    return rest


def run_for(
    ctx: Context,
    plugin: Plugin,
    command: str,
    script: Path,
    args: list[str],
    service: str | None,
    io: CommandIO | None = None,
) -> int:
    """Run an authorized command's ``script`` (``PLUGIN:CMD`` or ``services:info``...).

    A caller who may not write ``service`` gets the output masked (``gokku.redact``);
    the script learns which (``GOKKU_ACCESS``), to leave secrets out itself.
    """
    identity = ctx.request.identity
    if service is None:
        writer = identity.role == access.ADMIN
    else:
        writer = access.allows(identity, "service", service, access.WRITE)
    extra = {"GOKKU_ACCESS": access.WRITE if writer else access.READ}
    if service is not None:
        extra["SERVICE_NAME"] = service
        extra["GOKKU_SERVICE_DIR"] = str(ctx.root.service_dir(service))
        extra["GOKKU_LINKED_APPS"] = " ".join(_linked_apps(ctx, service))
    if writer:
        return run_script(ctx, plugin, script, args, extra, io, last=True)
    record = services.load(ctx.root, service).data if service is not None else None
    mask = redact.masker(record, plugin.secrets(command), plugin.secret_settings())
    binary = io is not None and io.stdout == "binary"
    if _worker_masks(ctx, mask, stdout=not binary):
        return run_script(ctx, plugin, script, args, extra, io, last=True)
    with redact.masked(ctx, mask, stdout=not binary) as masked_ctx:
        return run_script(masked_ctx, plugin, script, args, extra, io, last=True)


def _worker_masks(ctx: Context, mask: redact.Masker, stdout: bool) -> bool:
    """Whether the embedded server's worker masks the output of the script this session
    becomes (``gokku.ssh.handover``): no Python process is then left to mask it."""
    from gokku.ssh import handover

    request = ctx.request
    fds = (request.stdin.fileno(), request.stdout.fileno(), request.stderr.fileno())
    return handover.mask_here(fds, mask, stdout)  # False outside such a session


def script_of(plugin: Plugin, namespace: str, command: str) -> Path:
    """The script ``NAMESPACE:COMMAND`` runs, or UnknownCommand with a plausible hint."""
    script = None if command in LIFECYCLE else plugin.script(command)
    if script is None:
        from gokku import suggest  # difflib: only a mistyped command pays for it

        hint = suggest.plugin_command(namespace, command, plugin_commands(plugin))
        raise UnknownCommand(
            f"plugin {plugin.name!r} has no command {command!r}{hint} (see: gokku {namespace}:help)"
        )
    return script


def _linked_apps(ctx: Context, service: str) -> list[str]:
    """The apps linked to ``service`` that the caller may read (``info --links``): a
    script cannot tell which those are, and must not name the others."""
    linked = services.load(ctx.root, service).data.get("linked_apps", [])
    return access.visible(ctx.request.identity, "app", linked)


def _service_of(ctx: Context, plugin: Plugin, command: str, args: list[str]) -> str | None:
    """The service the first argument names, when it is one of this plugin's.

    Whether the caller may see it is decided before whether it exists: a member asking
    about a service it may not see gets the same answer whether or not there is one. A
    command whose declared usage starts with a service refuses a name that is none, with
    the closest one the caller may see (the dispatcher adds it).
    """
    if not args or not is_name(args[0]):
        return None
    level = plugin.access(command)
    if level in access.LEVELS:
        access.require(ctx, "service", args[0], level)
    elif not access.allows(ctx.request.identity, "service", args[0], access.READ):
        return None  # any or admin: a word the caller may not read names nothing
    if not services.exists(ctx.root, args[0]):
        if plugin.takes_service(command):
            services.load(ctx.root, args[0], plugin.name)  # NotFound, naming the service
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
