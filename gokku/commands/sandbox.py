"""``sandbox-run APP [--] COMMAND [ARGS...]`` and ``sandbox-client [--trusted] VAR... --
COMMAND [ARGS...]`` (``--check``: whether it would run one): what the ``run_in_sandbox``,
``run_client_in_sandbox`` and ``client_sandbox_ready`` helpers call (``gokku.sandbox``)."""

import os
import re

from gokku import sandbox
from gokku.context import Context
from gokku.errors import UsageError
from gokku.names import check_name

CLIENT_USAGE = "usage: run_client_in_sandbox VAR... -- COMMAND [ARGS...] (or --check)"
VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def run(ctx: Context, args: list[str]) -> int:
    app, *command = args or [""]
    if command[:1] == ["--"]:
        command = command[1:]
    if not app or app.startswith("-") or not command:
        raise UsageError("usage: run_in_sandbox APP [--] COMMAND [ARGS...]")
    _flush(ctx)
    sandbox.run(ctx.root, check_name("app", app), command)


def client(ctx: Context, args: list[str]) -> int:
    """The helper passes the named variables through to this callback (its environment
    is emptied down to Gokku's own otherwise), and ``--trusted`` for an admin's session."""
    trusted = args[:1] == ["--trusted"]
    words = args[1:] if trusted else args
    if words == ["--check"]:
        sandbox.client_sandbox(ctx.root, trusted)
        return 0
    if "--" not in words:
        raise UsageError(CLIENT_USAGE)
    split = words.index("--")
    names, command = words[:split], words[split + 1 :]
    if not command or not all(VARIABLE.fullmatch(name) for name in names):
        raise UsageError(CLIENT_USAGE)
    env = {name: os.environ[name] for name in names if name in os.environ}
    _flush(ctx)
    sandbox.run_client(ctx.root, command, env, trusted)


def _flush(ctx: Context) -> None:
    for stream in (ctx.request.stdout, ctx.request.stderr):
        stream.flush()
