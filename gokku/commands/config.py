"""``config:*`` verbs: an app's variables, exact to the byte through the ``.env`` file.

The app is ``-a APP`` (before the verb or after it) or, as in Dokku, the first argument:
``config:set api K=V``, ``config:get api K``; both at once if they name the same app. For
config:set a first word with ``=`` is a variable, so ``config:set K=V -a api`` keeps
working.
"""

import base64
import binascii
import os
from collections.abc import Callable

from gokku import access, apps, envfile, services
from gokku.cmdline import MAX_STDIN_ASSIGNMENTS, Parsed, parse
from gokku.commands import APP_VALUES, read_assignments, take_app, usage_line
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
    app_word: Callable[[str], bool] = lambda word: True,
) -> tuple[str, str, Parsed, str]:
    """Parse, name the app (``-a``, or a first argument ``app_word`` accepts that agrees
    with it) and check the caller's access to it before anything is read."""
    usage = usage_line(verb)
    values = {**APP_VALUES, "--env": "env", "-e": "env", **(values or {})}
    opts: Parsed = parse(args, usage, values=values, flags=flags)
    app = take_app(ctx, opts, usage, app_word)
    if len(opts.positional) < min_args:
        raise UsageError(f"missing argument; usage: {usage}")
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


def _store(ctx: Context, app: str, env: str, values: dict[str, str]) -> None:
    """Set ``values`` in one write, none of them a variable a link owns (checked under the
    app's lock, as links write)."""

    def change(current: dict[str, str]) -> None:
        _refuse_linked(ctx, app, env, list(values))
        current.update(values)

    apps.update_env(ctx.root, app, env, change)
    ctx.info(f"Set {', '.join(values)} on {app} ({env})")


def set_(ctx: Context, args: list[str]) -> int:
    app, env, opts, usage = _opts(
        ctx,
        "config:set",
        args,
        0,
        access.WRITE,
        flags={"--stdin": "stdin", "--encoded": "encoded"},
        app_word=lambda word: "=" not in word,
    )
    values = read_assignments(ctx, opts, opts.positional, usage, check_env_key)
    if opts.flag("encoded"):
        values = {key: _decode(key, value, usage) for key, value in values.items()}
    _store(ctx, app, env, values)
    return 0


def _decode(key: str, value: str, usage: str) -> str:
    """A ``--encoded`` value (Dokku's): base64 of UTF-8 text; line breaks (``base64``
    wraps at 76 columns) are ignored, anything else that is not base64 is refused."""
    try:
        return base64.b64decode("".join(value.split()), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise UsageError(
            f"--encoded: the value of {key} is not base64 of UTF-8 text; usage: {usage}"
        ) from None


def import_(ctx: Context, args: list[str]) -> int:
    """``config:import APP < .env``: every variable of a .env file, in one write."""
    app, env, opts, usage = _opts(ctx, "config:import", args, 0, access.WRITE)
    if opts.positional:
        raise UsageError(f"unexpected argument {opts.positional[0]!r}; usage: {usage}")
    _store(ctx, app, env, _read_env_file(ctx, usage))
    return 0


def _read_env_file(ctx: Context, usage: str) -> dict[str, str]:
    """The variables of the .env file on stdin; a malformed file is refused whole."""
    stdin = ctx.request.stdin
    if os.isatty(stdin.fileno()):
        raise UsageError(f"config:import reads a .env file from standard input: {usage}")
    data = stdin.read(MAX_STDIN_ASSIGNMENTS + 1)
    if len(data) > MAX_STDIN_ASSIGNMENTS:
        raise UsageError(f"config:import takes at most {MAX_STDIN_ASSIGNMENTS >> 20} MiB")
    try:
        values = envfile.parse(data.decode("utf-8"), source="stdin").values
    except UnicodeDecodeError:
        raise UsageError("stdin: a .env file must be UTF-8 text") from None
    except GokkuError as exc:
        raise UsageError(f"{exc.message}; nothing was changed") from None
    if not values:
        raise UsageError(f"stdin holds no KEY=VALUE line; usage: {usage}")
    return {check_env_key(key): value for key, value in values.items()}


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
    return _list(ctx, "config:list", args)


def show(ctx: Context, args: list[str]) -> int:
    """Dokku's name for config:list."""
    return _list(ctx, "config:show", args)


def export(ctx: Context, args: list[str]) -> int:
    """``export KEY=VALUE`` lines, for ``eval "$(gokku config:export api)"``."""
    return _list(ctx, "config:export", args, "shell")


def _list(ctx: Context, verb: str, args: list[str], fixed_format: str | None = None) -> int:
    options = None if fixed_format else {"--format": "format"}
    app, env, opts, usage = _opts(ctx, verb, args, 0, access.READ, values=options)
    if opts.positional:
        raise UsageError(f"unexpected argument {opts.positional[0]!r}; usage: {usage}")
    fmt = fixed_format or opts.get("format", ctx.format)
    if fmt not in ("text", "json", "shell"):
        raise UsageError(f"unknown format {fmt!r}: use text, json or shell")
    values = apps.read_env(ctx.root, app, env)
    if fmt == "json":
        ctx.out_json(values)
        return 0
    prefix = "export " if fmt == "shell" else ""
    for key, value in values.items():
        ctx.out(f"{prefix}{key}={envfile.quote(value)}")
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
