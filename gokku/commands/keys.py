"""``ssh-keys:*`` verbs: the registry of keys allowed in through either SSH door."""

import os
from pathlib import Path

from gokku import keys, sessions
from gokku.cmdline import parse
from gokku.commands import usage_line
from gokku.context import Context
from gokku.errors import GokkuError, NotFound, UsageError
from gokku.ssh.config import load as load_config


def upgraded(ctx: Context) -> list[keys.Key]:
    """Bring a registry from before roles up to date, saying so the one time it happens;
    return the keys it kept as admins (none when it was up to date)."""
    kept = keys.upgrade(ctx.root, load_config(ctx.root))
    if kept:
        names = ", ".join(key.name for key in kept)
        ctx.warn(
            f"{len(kept)} key(s) registered before roles existed keep the admin role: {names} "
            "(new keys are members; see: gokku ssh-keys:list)"
        )
    return kept


def add(ctx: Context, args: list[str]) -> int:
    usage = usage_line("ssh-keys:add")
    opts = parse(args, usage, values={"--role": "role"}, min_args=1, max_args=2)
    name, *path = opts.positional
    upgraded(ctx)
    text = _read_key(ctx, path[0] if path else None)
    key, done = keys.add(ctx.root, load_config(ctx.root), name, text, opts.get("role", "member"))
    if done == keys.ADDED:
        ctx.info(f"Added key {name} ({key.type} {key.fingerprint}), role {key.role}")
    elif done == keys.REPAIRED:
        ctx.warn(
            f"key {name} ({key.fingerprint}) was registered, but ssh/authorized_keys was out of "
            "step with the registry (an add cut off halfway?): rewrote it"
        )
    else:
        ctx.info(f"Key {name} ({key.fingerprint}) is already registered")
    return 0


def _read_key(ctx: Context, path: str | None) -> str:
    """The key from stdin; from PATH only on the server itself. Over SSH a PATH would make
    the server read its own files for the caller (and echo them in errors)."""
    if path is not None:
        if ctx.request.identity.over_ssh:
            raise UsageError(
                "over SSH the key comes from stdin: ssh ... ssh-keys:add NAME < KEY.pub"
            )
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


def described(key: keys.Key) -> dict[str, object]:
    """A key as listings show it (never its key data)."""
    return {
        "name": key.name,
        "type": key.type,
        "fingerprint": key.fingerprint,
        "role": key.role,
        "grants": dict(sorted(key.grants.items())),
        "added": key.added,
    }


def grants_text(grants: dict[str, str]) -> str:
    return ",".join(f"{t}({a})" for t, a in sorted(grants.items())) or "-"


def list_(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("ssh-keys:list"), values={"--format": "format"}, max_args=0)
    upgraded(ctx)
    ctx.listing(
        opts.get("format", ctx.format),
        [described(keys.live(ctx.root, key)) for key in keys.load(ctx.root)],
        "No keys (add one: gokku ssh-keys:add NAME < KEY.pub)",
        ["NAME", "ROLE", "TYPE", "FINGERPRINT", "GRANTS", "ADDED"],
        lambda r: [
            r["name"],
            r["role"],
            r["type"],
            r["fingerprint"],
            grants_text(r["grants"]),
            r["added"],
        ],
    )
    return 0


def remove(ctx: Context, args: list[str]) -> int:
    usage = usage_line("ssh-keys:remove")
    opts = parse(args, usage, values={"--fingerprint": "fingerprint"}, max_args=1)
    name = opts.positional[0] if opts.positional else None
    fingerprint = opts.get("fingerprint")
    if bool(name) == bool(fingerprint):
        raise UsageError(f"give a NAME or --fingerprint FP; usage: {usage}")
    upgraded(ctx)
    key = keys.remove(ctx.root, load_config(ctx.root), name, fingerprint)
    sessions.hang_up(ctx.root, key.fingerprint)  # its sessions through sshd (the embedded
    # server closes its own connections when it sees the registry change)
    ctx.info(f"Removed key {key.name} ({key.fingerprint})")
    return 0
