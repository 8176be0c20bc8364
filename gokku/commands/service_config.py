"""The hidden ``services:*`` verbs the plugin helpers call back into: a service's config
and env sections (config-get, config-set, env-set) and its port (next-port).

Each call is an interpreter of its own, a thousand in a run of the test suite, so they are
apart from ``gokku.commands.services``, whose verbs run plugin scripts and import most of
Gokku for it (schedules, keys, the doctor, the plugin installer): a callback that imported
that module spent 100 ms on imports, against 28 for ``config:set``.
"""

import json

from gokku import services
from gokku.cmdline import is_number, parse
from gokku.commands import read_assignments, usage_line
from gokku.context import Context
from gokku.errors import NotFound, UsageError
from gokku.names import check_env_key, check_name


def config_get(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("services:config-get"), min_args=1, max_args=2)
    name = check_name("service", opts.positional[0])
    if len(opts.positional) == 1:
        # One compact line, as the original's cat of the file Go wrote: official plugins
        # grep it ('"password":"[^"]*"'); {} for a service that does not exist.
        data = services.load(ctx.root, name).data if services.exists(ctx.root, name) else {}
        ctx.out(json.dumps(data, ensure_ascii=False, separators=(",", ":")))
        return 0
    service = services.load(ctx.root, name)
    key = opts.positional[1]
    if key not in service.config:
        raise NotFound(f"service {service.name!r} has no config key {key!r}")
    value = service.config[key]
    ctx.out(value if isinstance(value, str) else json.dumps(value))
    return 0


def _set_section(ctx: Context, args: list[str], verb: str, section: str, check) -> int:
    usage = usage_line(verb)
    opts = parse(args, usage, flags={"--stdin": "stdin"}, min_args=1)
    name = check_name("service", opts.positional[0])
    values = read_assignments(ctx, opts, opts.positional[1:], usage, check)
    services.update(ctx.root, name, section, values)
    return 0


def config_set(ctx: Context, args: list[str]) -> int:
    return _set_section(ctx, args, "services:config-set", "config", str)


def env_set(ctx: Context, args: list[str]) -> int:
    return _set_section(ctx, args, "services:env-set", "env", check_env_key)


def next_port(ctx: Context, args: list[str]) -> int:
    """Hands out a port and holds it for a while; ``--check`` only asks whether START
    itself is free (``port_available``), holding nothing."""
    usage = usage_line("services:next-port")
    opts = parse(args, usage, flags={"--check": "check"}, max_args=1)
    start_text = opts.positional[0] if opts.positional else "9000"
    if not is_number(start_text) or not 1 <= int(start_text) <= services.MAX_PORT:
        raise UsageError(f"invalid port {start_text!r}: use a number from 1 to {services.MAX_PORT}")
    start = int(start_text)
    if opts.options["check"]:
        return 0 if services.port_available(ctx.root, start) else 1
    ctx.out(str(services.hold_port(ctx.root, start)))
    return 0
