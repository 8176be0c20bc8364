"""``access:*`` verbs: what member keys may do (admins may do everything)."""

from gokku import access, keys
from gokku.cmdline import parse
from gokku.commands import usage_line
from gokku.commands.keys import described, grants_text, upgraded
from gokku.context import Context
from gokku.errors import NotFound, UsageError
from gokku.names import check_name
from gokku.ssh.config import load as load_config


def _target(text: str, usage: str) -> tuple[str, str]:
    kind, colon, name = text.partition(":")
    if not colon or kind not in access.KINDS:
        raise UsageError(f"name an app:APP or a service:SVC, not {text[:64]!r}; usage: {usage}")
    return kind, check_name(kind, name)


def _key_and_target(ctx: Context, verb: str, args: list[str], **flags: str) -> tuple:
    usage = usage_line(verb)
    opts = parse(args, usage, flags=flags, min_args=2, max_args=2)
    name = check_name("key", opts.positional[0])
    kind, target = _target(opts.positional[1], usage)
    upgraded(ctx)
    return name, kind, target, opts


def grant(ctx: Context, args: list[str]) -> int:
    name, kind, target, opts = _key_and_target(ctx, "access:grant", args, **{"--read": "read"})
    level = access.READ if opts.flag("read") else access.WRITE
    key = keys.grant(ctx.root, load_config(ctx.root), name, kind, target, level)
    ctx.info(f"Key {name} may now {level} {kind} {target}")
    if key.role == access.ADMIN:
        ctx.warn(f"{name} is an admin: grants change nothing for it")
    return 0


def revoke(ctx: Context, args: list[str]) -> int:
    name, kind, target, _ = _key_and_target(ctx, "access:revoke", args)
    keys.set_grant(ctx.root, load_config(ctx.root), name, access.target(kind, target), None)
    ctx.info(f"Key {name} no longer has access to {kind} {target}")
    return 0


def list_(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("access:list"), values={"--format": "format"}, max_args=1)
    upgraded(ctx)
    entries = [keys.live(ctx.root, key) for key in keys.load(ctx.root)]
    if opts.positional:
        wanted = opts.positional[0]
        entries = [key for key in entries if key.name == wanted]
        if not entries:
            raise NotFound(f"no key named {wanted[:64]!r} is registered (see: gokku ssh-keys:list)")
    ctx.listing(
        opts.get("format", ctx.format),
        [
            {k: v for k, v in described(key).items() if k in ("name", "role", "grants")}
            for key in entries
        ],
        "No keys",
        ["KEY", "ROLE", "GRANTS"],
        lambda r: [
            r["name"],
            r["role"],
            "(everything)" if r["role"] == "admin" else grants_text(r["grants"]),
        ],
    )
    return 0
