"""``config:*`` verbs: an app's variables, exact to the byte through the ``.env`` file."""

from gokku import access, apps, envfile, services
from gokku.cmdline import Parsed, parse
from gokku.commands import read_assignments, usage_line
from gokku.context import Context
from gokku.errors import GokkuError, NotFound, UsageError
from gokku.names import check_env_key, check_name


def _opts(
    ctx: Context,
    verb: str,
    args: list[str],
    min_args: int,
    level: str,
    values: dict[str, str] | None = None,
    flags: dict[str, str] | None = None,
) -> tuple:
    usage = usage_line(verb)
    values = {"-a": "app", "--app": "app", "--env": "env", "-e": "env", **(values or {})}
    opts: Parsed = parse(args, usage, values=values, flags=flags, min_args=min_args)
    app = opts.get("app", ctx.app)
    if not app:
        raise UsageError(f"missing -a APP; usage: {usage}")
    check_name("app", app)
    access.require(ctx, "app", app, level)
    apps.require(ctx.root, app)
    return app, check_name("environment", opts.get("env", apps.DEFAULT_ENV)), opts, usage


def _refuse_linked(ctx: Context, app: str, env: str, keys: list[str]) -> None:
    owned = services.owners(ctx.root, app, env)
    for key in keys:
        owner = owned.get(key)
        if owner:
            raise GokkuError(
                f"{key} on app {app!r} belongs to service {owner!r}; "
                f"use gokku services:unlink {owner} -a {app}"
            )


def set_(ctx: Context, args: list[str]) -> int:
    app, env, opts, usage = _opts(
        ctx, "config:set", args, 0, access.WRITE, flags={"--stdin": "stdin"}
    )
    values = read_assignments(ctx, opts, opts.positional, usage, check_env_key)

    def change(current: dict[str, str]) -> None:
        _refuse_linked(ctx, app, env, list(values))  # under the app's lock, as links write
        current.update(values)

    apps.update_env(ctx.root, app, env, change)
    ctx.info(f"Set {', '.join(values)} on {app} ({env})")
    return 0


def get(ctx: Context, args: list[str]) -> int:
    app, env, opts, usage = _opts(ctx, "config:get", args, 1, access.READ)
    if len(opts.positional) != 1:
        raise UsageError(f"config:get takes one KEY; usage: {usage}")
    key = check_env_key(opts.positional[0])
    values = apps.read_env(ctx.root, app, env)
    if key not in values:
        raise NotFound(f"{key} is not set on app {app!r} ({env})")
    ctx.out(values[key])
    return 0


def list_(ctx: Context, args: list[str]) -> int:
    app, env, opts, usage = _opts(
        ctx, "config:list", args, 0, access.READ, values={"--format": "format"}
    )
    if opts.positional:
        raise UsageError(f"unexpected argument {opts.positional[0]!r}; usage: {usage}")
    values = apps.read_env(ctx.root, app, env)
    fmt = opts.get("format", ctx.format)
    if fmt == "json":
        ctx.out_json(values)
    elif fmt == "shell":
        for key, value in values.items():
            ctx.out(f"export {key}={envfile.quote(value)}")
    elif fmt == "text":
        for key, value in values.items():
            ctx.out(f"{key}={envfile.quote(value)}")
    else:
        raise UsageError(f"unknown format {fmt!r}: use text, json or shell")
    return 0


def unset(ctx: Context, args: list[str]) -> int:
    app, env, opts, _ = _opts(ctx, "config:unset", args, 1, access.WRITE)
    keys = [check_env_key(key) for key in opts.positional]

    def drop(current: dict[str, str]) -> None:
        _refuse_linked(ctx, app, env, keys)  # under the app's lock, as links write
        for key in keys:
            current.pop(key, None)

    apps.update_env(ctx.root, app, env, drop)
    ctx.info(f"Unset {', '.join(keys)} on {app} ({env})")
    return 0
