"""Dokku's questions about a plugin's services (``PLUGIN:exists SVC``, ``PLUGIN:links SVC``,
``PLUGIN:linked SVC APP``, ``PLUGIN:app-links APP``), routed by ``PLUGIN_FORMS``.

They are answered here rather than by each plugin's scripts because the answer depends
on the caller: a member learns only the apps and services it may read, and a name it may
not read is refused exactly as a missing one is (the access check comes before the
existence check). The answer is the exit code (0 yes, 1 no) or the names on stdout, one a
line; the yes is said on stderr, as progress is.
"""

from gokku import access, apps, services
from gokku.cmdline import parse
from gokku.commands import form_usage
from gokku.context import Context
from gokku.errors import GokkuError, NotFound
from gokku.names import check_name
from gokku.plugins import registry


def _own_service(ctx: Context, plugin: registry.Plugin, name: str) -> services.Service:
    """The plugin's service NAME, which the caller may read; a service of another plugin
    is not one of this plugin's (Dokku keeps each plugin's services apart)."""
    check_name("service", name)
    access.require(ctx, "service", name, access.READ)  # before load: no existence probing
    try:
        service = services.load(ctx.root, name)
    except NotFound:
        service = None
    if service is None or service.plugin != plugin.name:
        raise NotFound(f"{plugin.name} service {name!r} does not exist", "service", name)
    return service


def _readable_app(ctx: Context, name: str) -> str:
    check_name("app", name)
    access.require(ctx, "app", name, access.READ)
    apps.require(ctx.root, name)
    return name


def exists_form(ctx: Context, plugin: registry.Plugin, verb: str, args: list[str]) -> int:
    """``PLUGIN:exists SVC``: exit 0 when the plugin has that service, 1 when not."""
    opts = parse(args, form_usage(verb), min_args=1, max_args=1)
    name = _own_service(ctx, plugin, opts.positional[0]).name
    ctx.info(f"{plugin.name} service {name} exists")
    return 0


def links_form(ctx: Context, plugin: registry.Plugin, verb: str, args: list[str]) -> int:
    """``PLUGIN:links SVC``: the apps linked to it that the caller may read."""
    opts = parse(args, form_usage(verb), min_args=1, max_args=1)
    service = _own_service(ctx, plugin, opts.positional[0])
    for app in access.visible(ctx.request.identity, "app", service.data.get("linked_apps", [])):
        ctx.out(app)
    return 0


def linked_form(ctx: Context, plugin: registry.Plugin, verb: str, args: list[str]) -> int:
    """``PLUGIN:linked SVC APP``: exit 0 when the service is linked to the app, 1 when not."""
    opts = parse(args, form_usage(verb), min_args=2, max_args=2)
    service = _own_service(ctx, plugin, opts.positional[0])
    app = _readable_app(ctx, opts.positional[1])
    if app not in service.data.get("linked_apps", []):
        raise GokkuError(f"service {service.name} is not linked to {app}")
    ctx.info(f"service {service.name} is linked to {app}")
    return 0


def app_links_form(ctx: Context, plugin: registry.Plugin, verb: str, args: list[str]) -> int:
    """``PLUGIN:app-links APP``: the plugin's services linked to APP that the caller may
    read."""
    opts = parse(args, form_usage(verb), min_args=1, max_args=1)
    app = _readable_app(ctx, opts.positional[0])
    identity = ctx.request.identity
    for service in services.all_services(ctx.root):
        if (
            service.plugin == plugin.name
            and app in service.data.get("linked_apps", [])
            and access.allows(identity, "service", service.name, access.READ)
        ):
            ctx.out(service.name)
    return 0
