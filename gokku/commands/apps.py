"""``apps:*`` verbs."""

from gokku import access, apps, confirm, deploylog, deploys, keys, repos, services
from gokku.cmdline import Parsed, is_number, parse
from gokku.commands import APP_VALUES, take_app, usage_line
from gokku.context import Context
from gokku.errors import GokkuError, UsageError
from gokku.ssh.config import load as load_config


def _app_arg(
    ctx: Context,
    verb: str,
    args: list[str],
    count: tuple[int, int] = (0, 0),
    values: dict[str, str] | None = None,
    **flags: str,
) -> tuple[str, Parsed]:
    """The app (``take_app``: ``-a APP`` or the first word) and the options; ``count``:
    how many more words the verb takes, at least and at most."""
    usage = usage_line(verb)
    opts = parse(args, usage, values={**APP_VALUES, **(values or {})}, flags=flags)
    app = take_app(ctx, opts, usage)
    least, most = count
    if len(opts.positional) < least:
        raise UsageError(f"missing argument; usage: {usage}")
    if len(opts.positional) > most:
        raise UsageError(f"unexpected argument {opts.positional[most]!r}; usage: {usage}")
    return app, opts


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


def finish_destroy(ctx: Context, kind: str, name: str) -> bool:
    """The rerun of a destroy that was cut off after the app or service was gone: delete
    what it left (tombstones, an orphan repository) and the grants on the name. False
    when there was nothing to finish (the name never existed, or that destroy ended)."""
    if kind == "app":
        held, clear = apps.app_lock(ctx.root, name), apps.clear_leftovers
    else:
        held, clear = services.service_lock(ctx.root, name), services.clear_leftovers
    with held:
        if keys.incarnation(ctx.root, access.target(kind, name)) is not None:
            return False  # it exists (again): a destroy of it is a new one
        removed = clear(ctx.root, name)
        dropped = keys.drop_grants(ctx.root, load_config(ctx.root), access.target(kind, name))
    if removed or dropped:
        what = ", ".join(removed + (["its grants"] if dropped else []))
        ctx.info(f"Finished a destroy of {kind} {name} that was cut off: removed {what}")
    return bool(removed or dropped)


def destroy(ctx: Context, args: list[str]) -> int:
    app, opts = _app_arg(ctx, "apps:destroy", args, **{"--force": "force", "-f": "force"})
    if not apps.exists(ctx.root, app) and finish_destroy(ctx, "app", app):
        return 0
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


def deploy(ctx: Context, args: list[str]) -> int:
    """``apps:deploy APP [REV]``: Dokku's ps:rebuild, and a rollback with REV."""
    app, opts = _app_arg(ctx, "apps:deploy", args, (0, 1))
    access.require(ctx, "app", app, access.WRITE)
    repos.require(ctx.root, app)
    with deploys.locked(ctx, app, "apps:deploy"):
        deploys.redeploy(ctx, app, opts.positional[0] if opts.positional else None)
    return 0


def deploys_(ctx: Context, args: list[str]) -> int:
    app, opts = _app_arg(ctx, "apps:deploys", args, values={"--format": "format"})
    access.require(ctx, "app", app, access.READ)
    apps.require(ctx.root, app)
    ctx.listing(
        opts.get("format", ctx.format),
        deploylog.records(ctx.root, app),
        f"No deploys of {app} yet",
        ["#", "REVISION", "BRANCH", "KEY", "STARTED", "SECONDS", "RESULT"],
        lambda r: [
            str(r["number"]),
            r["rev"][:12],
            r["branch"],
            r["key"],
            r["started"],
            "-" if r["duration"] is None else f"{r['duration']:g}",
            f"{r['result']}: {r['reason']}" if r["reason"] else r["result"],
        ],
    )
    return 0


def deploy_log(ctx: Context, args: list[str]) -> int:
    app, opts = _app_arg(ctx, "apps:deploy-log", args, (0, 1))
    access.require(ctx, "app", app, access.READ)
    apps.require(ctx.root, app)
    number = opts.positional[0] if opts.positional else None
    if number is not None and not is_number(number):
        raise UsageError(f"N must be a deploy's number (see: gokku apps:deploys {app})")
    path = deploylog.log_path(ctx.root, app, None if number is None else int(number))
    ctx.request.stdout.write(path.read_bytes())
    ctx.request.stdout.flush()
    return 0


def deploy_set(ctx: Context, args: list[str]) -> int:
    """``apps:deploy-set APP branch|wait [VALUE]``: without VALUE, back to the default."""
    app, opts = _app_arg(ctx, "apps:deploy-set", args, (1, 2))
    access.require(ctx, "app", app, access.WRITE)
    key, value = opts.positional[0], (opts.positional[1:] or [None])[0]
    stored = deploys.set_setting(ctx, app, key, value)
    ctx.info(f"{key} of {app}: {'the default' if stored is None else stored}")
    return 0
