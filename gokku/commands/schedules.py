"""``services:schedule``: the hidden verb behind the plugins' ``backup-schedule``,
``backup-schedule-cat`` and ``backup-unschedule`` (through the helpers), and the one the
crontab's lines run (``run``). Plugins decide who may call them (plugin.yml); this verb is
LOCAL: no SSH identity reaches it."""

from typing import Any

from gokku import schedules
from gokku.cmdline import parse
from gokku.commands import usage_line
from gokku.context import Context
from gokku.errors import UsageError
from gokku.names import check_name

VERB = "services:schedule"


def schedule(ctx: Context, args: list[str]) -> int:
    usage = usage_line(VERB)
    action = args[0] if args else ""
    handler = ACTIONS.get(action)
    if handler is None:
        raise UsageError(f"unknown action {action!r}; usage: {usage}")
    return handler(ctx, args[1:], usage)


def _add(ctx: Context, args: list[str], usage: str) -> int:
    values = {"--first-also": "first", "--first-also-cron": "first_cron"}
    head, sep, command = _split(args)
    opts = parse(head, usage, values=values, min_args=2, max_args=2)
    if not sep or not command:
        raise UsageError(f"missing -- COMMAND; usage: {usage}")
    name = check_name("service", opts.positional[0])
    first = None
    if (opts.get("first") is None) != (opts.get("first_cron") is None):
        raise UsageError(f"--first-also and --first-also-cron go together; usage: {usage}")
    if opts.get("first") is not None:
        first = (str(opts.get("first_cron")), [str(opts.get("first")), name])
    for record in schedules.add(ctx.root, name, opts.positional[1], command, first):
        ctx.info(f"Scheduled {name} {record['id']}: '{record['cron']}' {_shown(record)}")
    return 0


def _split(args: list[str]) -> tuple[list[str], bool, list[str]]:
    if "--" not in args:
        return args, False, []
    at = args.index("--")
    return args[:at], True, args[at + 1 :]


def _list(ctx: Context, args: list[str], usage: str) -> int:
    opts = parse(args, usage, values={"--format": "format"}, min_args=1, max_args=1)
    name = check_name("service", opts.positional[0])
    records = schedules.listing(ctx.root, name)
    ctx.listing(
        opts.get("format", ctx.format),
        records,
        f"service {name} has no schedules",
        ["ID", "CRON", "COMMAND", "LAST RUN"],
        lambda r: [r["id"], r["cron"], _shown(r), _last_run(r)],
    )
    return 0


def _shown(record: dict[str, Any]) -> str:
    return " ".join(record["command"])


def _last_run(record: dict[str, Any]) -> str:
    last = record.get("last_run")
    if not last:
        return "never"
    if last.get("exit") is None:
        return f"{last['start']} (running, or cut off)"
    return f"{last['start']} (exit {last['exit']})"


def _remove(ctx: Context, args: list[str], usage: str) -> int:
    opts = parse(args, usage, min_args=1, max_args=2)
    name = check_name("service", opts.positional[0])
    ident = opts.positional[1] if len(opts.positional) == 2 else None
    gone = schedules.remove(ctx.root, name, ident)
    for record in gone:
        ctx.info(f"Unscheduled {name} {record['id']}: '{record['cron']}' {_shown(record)}")
    if not gone:
        ctx.info(f"service {name} had no schedules")
    return 0


def _run(ctx: Context, args: list[str], usage: str) -> int:
    opts = parse(args, usage, min_args=2, max_args=2)
    return schedules.run(ctx.root, check_name("service", opts.positional[0]), opts.positional[1])


ACTIONS = {"add": _add, "list": _list, "remove": _remove, "run": _run}
