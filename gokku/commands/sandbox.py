"""``sandbox-run APP [--] COMMAND [ARGS...]``: what the ``run_in_sandbox`` helper calls
(``gokku.sandbox``)."""

from gokku import sandbox
from gokku.context import Context
from gokku.errors import UsageError
from gokku.names import check_name


def run(ctx: Context, args: list[str]) -> int:
    app, *command = args or [""]
    if command[:1] == ["--"]:
        command = command[1:]
    if not app or app.startswith("-") or not command:
        raise UsageError("usage: run_in_sandbox APP [--] COMMAND [ARGS...]")
    for stream in (ctx.request.stdout, ctx.request.stderr):
        stream.flush()
    sandbox.run(ctx.root, check_name("app", app), command)
