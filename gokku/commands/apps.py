"""``apps:*`` verbs."""

from gokku import access, apps, confirm, keys, services
from gokku.cmdline import parse
from gokku.commands import usage_line
from gokku.context import Context
from gokku.errors import GokkuError
from gokku.names import check_name
from gokku.ssh.config import load as load_config


def _app_arg(ctx: Context, verb: str, args: list[str], **flags: str) -> tuple[str, object]:
    opts = parse(args, usage_line(verb), flags=flags, max_args=1)
    app = opts.positional[0] if opts.positional else ctx.app
    if not app:
        raise GokkuError(f"missing app name; usage: {usage_line(verb)}")
    return check_name("app", app), opts


def _refuse_linked(ctx: Context, app: str, force: bool) -> list[tuple[str, str]]:
    """The app's links (service, env), refused unless ``force``."""
    apps.require(ctx.root, app)
    linked = services.links_to(ctx.root, app)
    if linked and not force:
        names = ", ".join(sorted({name for name, _ in linked}))
        raise GokkuError(f"app {app!r} is linked to {names}; unlink first or use --force")
    return linked


def create(ctx: Context, args: list[str]) -> int:
    app, _ = _app_arg(ctx, "apps:create", args)
    apps.create(ctx.root, app)
    ctx.info(f"Created app {app}")
    return 0


def list_(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("apps:list"), values={"--format": "format"}, max_args=0)
    names = access.visible(ctx.request.identity, "app", apps.names(ctx.root))
    if opts.get("format", ctx.format) == "json":
        ctx.out_json(names)
    elif not names:
        ctx.out("No apps")
    else:
        for name in names:
            ctx.out(name)
    return 0


def destroy(ctx: Context, args: list[str]) -> int:
    app, opts = _app_arg(ctx, "apps:destroy", args, **{"--force": "force", "-f": "force"})
    _refuse_linked(ctx, app, opts.flag("force"))  # before asking: no point in the question
    confirm.destroy(ctx, "app", app, apps.losses(ctx.root, app), opts.flag("force"))
    with apps.app_lock(ctx.root, app):  # no link to it can come or go meanwhile
        linked = _refuse_linked(ctx, app, opts.flag("force"))
        for name, env in linked:
            services.unlink(ctx.root, name, app, env)
            ctx.info(f"Unlinked {name} from {app} ({env})")
        apps.destroy(ctx.root, app)
    keys.drop_grants(ctx.root, load_config(ctx.root), access.target("app", app))
    ctx.info(f"Destroyed app {app}")
    return 0
