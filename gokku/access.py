"""Who may do what: the one place that answers, for the dispatcher and the commands.

An ``admin`` key may do everything; a ``member`` only what its grants name: ``write`` or
``read`` on an app or a service (``write`` includes ``read``). The local CLI is the
state's owner and so an admin. Built-in verbs declare what they need in the command table
(``gokku.commands``); plugin commands in ``plugin.yml``. A refusal is an ``AccessDenied``
whose message tells the caller which grant to ask for.
"""

from gokku.context import Context, Identity
from gokku.errors import AccessDenied

READ = "read"
WRITE = "write"
LEVELS = {READ: 1, WRITE: 2}
KINDS = ("app", "service")

# What a verb needs, as the command table declares it.
ANY = "any"  # anyone who got in
ADMIN = "admin"  # admin keys only
GRANTED = "granted"  # the command checks the app/service it acts on (require)
LOCAL = "local"  # doors and plugin helpers: never from an SSH identity


def target(kind: str, name: str) -> str:
    return f"{kind}:{name}"


def allows(identity: Identity, kind: str, name: str, level: str) -> bool:
    if identity.role == ADMIN:
        return True
    have = identity.grants.get(target(kind, name))
    return have is not None and LEVELS[have] >= LEVELS[level]


def require(ctx: Context, kind: str, name: str, level: str) -> None:
    """Refuse unless the caller has ``level`` access to the app or service ``name``."""
    identity = ctx.request.identity
    if not allows(identity, kind, name, level):
        flag = " --read" if level == READ else ""
        raise AccessDenied(
            f"{identity.name} may not {level} {kind} {name!r}: ask an admin for "
            f"access:grant {identity.name} {target(kind, name)}{flag}",
            kind,
            name,
        )


def require_named_app(ctx: Context, need: str) -> None:
    """``-a APP``, decided before anything runs: plugin scripts get it as GOKKU_APP, and
    their helpers act on it with the server's own rights. A command declared ``read`` or
    ``write`` needs that on the app, any other at least ``read`` (naming an app the
    caller may not see gets the same refusal whether or not it exists)."""
    if ctx.app is not None:
        require(ctx, "app", ctx.app, need if need in LEVELS else READ)


def require_admin(ctx: Context, what: str) -> None:
    identity = ctx.request.identity
    if identity.role != ADMIN:
        raise AccessDenied(f"{identity.name} may not {what} (admins only): ask an admin")


def verb_allowed(identity: Identity, need: str) -> bool:
    """Whether the caller may run a verb that needs ``need`` at all (a GRANTED one still
    checks the app or service it acts on)."""
    if need == LOCAL:
        return not identity.over_ssh
    return need != ADMIN or identity.role == ADMIN


def check_verb(ctx: Context, verb: str, need: str) -> None:
    """The dispatcher's check, before a built-in runs."""
    if verb_allowed(ctx.request.identity, need):
        return
    if need == LOCAL:
        raise AccessDenied(f"{verb} is not available over SSH")
    require_admin(ctx, f"run {verb}")


def visible(identity: Identity, kind: str, names: list[str]) -> list[str]:
    """What a listing shows the caller: the names it may read."""
    return [name for name in names if allows(identity, kind, name, READ)]
