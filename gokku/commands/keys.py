"""``ssh-keys:*`` verbs: the registry of keys allowed in through either SSH door."""

import os
from pathlib import Path

from gokku import keys
from gokku.cmdline import parse
from gokku.commands import usage_line
from gokku.context import Context
from gokku.errors import GokkuError, NotFound, UsageError
from gokku.ssh.config import load as load_config


def add(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("ssh-keys:add"), min_args=1, max_args=2)
    name, *path = opts.positional
    text = _read_key(ctx, path[0] if path else None)
    key, added = keys.add(ctx.root, load_config(ctx.root), name, text)
    if added:
        ctx.info(f"Added key {name} ({key.type} {key.fingerprint})")
    else:
        ctx.info(f"Key {name} ({key.fingerprint}) is already registered")
    return 0


def _read_key(ctx: Context, path: str | None) -> str:
    if path is not None:
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no such file: {path}") from None
        except OSError as exc:
            raise GokkuError(f"cannot read {path}: {exc.strerror}") from None
    else:
        if os.isatty(ctx.request.stdin.fileno()):
            usage = usage_line("ssh-keys:add")
            raise UsageError(f"pipe the public key in or give a PATH; usage: {usage}")
        data = ctx.request.stdin.read(1 << 16)
    try:
        return data.decode("ascii")
    except UnicodeDecodeError:
        raise UsageError("not an SSH public key (the input is not text)") from None


def list_(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("ssh-keys:list"), values={"--format": "format"}, max_args=0)
    entries = keys.load(ctx.root)
    if opts.get("format", ctx.format) == "json":
        ctx.out_json(
            [
                {"name": k.name, "type": k.type, "fingerprint": k.fingerprint, "added": k.added}
                for k in entries
            ]
        )
    elif not entries:
        ctx.out("No keys (add one: gokku ssh-keys:add NAME PATH)")
    else:
        rows = [[k.name, k.type, k.fingerprint, k.added] for k in entries]
        ctx.table(["NAME", "TYPE", "FINGERPRINT", "ADDED"], rows)
    return 0


def remove(ctx: Context, args: list[str]) -> int:
    usage = usage_line("ssh-keys:remove")
    opts = parse(args, usage, values={"--fingerprint": "fingerprint"}, max_args=1)
    name = opts.positional[0] if opts.positional else None
    fingerprint = opts.get("fingerprint")
    if bool(name) == bool(fingerprint):
        raise UsageError(f"give a NAME or --fingerprint FP; usage: {usage}")
    key = keys.remove(ctx.root, load_config(ctx.root), name, fingerprint)
    ctx.info(f"Removed key {key.name} ({key.fingerprint})")
    return 0
