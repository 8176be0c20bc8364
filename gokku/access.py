"""Who may do what: the one place that answers, for the dispatcher and the commands.

An ``admin`` key may do everything; a ``member`` only what its grants name: ``write`` or
``read`` on an app or a service (``write`` includes ``read``). The local CLI is the
state's owner and so an admin. Built-in verbs declare what they need in the command table
(``gokku.commands``); plugin commands in ``plugin.yml``. A refusal is an ``AccessDenied``
whose message tells the caller which grant to ask for.

A member's access is decided when its command starts, on the incarnation of each app and
service its grants hold on then (``decided``). A command can run long, and the name can be
destroyed and made again meanwhile: the decision holds for that incarnation only. Every
change to an app or a service happens under its lock, and the lock checks, once it is
held, that the incarnation under the name is still the one decided on (``hold_decision``);
the helpers' callbacks and git's hooks inherit the decision through the environment the
runner builds (DECIDED_VAR), as they inherit the locks.
"""

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar

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


DECIDED_VAR = "GOKKU_DECIDED_ON"
_decided: ContextVar[Mapping[str, str] | None] = ContextVar("gokku_decided_on", default=None)


@contextlib.contextmanager
def decided(identity: Identity) -> Iterator[None]:
    """Within the block, changes hold the caller to the incarnations its access was
    decided on (``identity.bound``)."""
    token = _decided.set(identity.bound)
    try:
        yield
    finally:
        _decided.reset(token)


def decided_on() -> dict[str, str]:
    """``app:NAME`` -> the incarnation the running command's access holds on: this
    process's request, and the command that started this one (a callback), if any."""
    inherited = os.environ.get(DECIDED_VAR, "").split()
    return {**dict(pair.partition("=")[::2] for pair in inherited), **(_decided.get() or {})}


def decision_env() -> dict[str, str]:
    """What a child's environment carries of ``decided_on`` (the runner adds it)."""
    bound = decided_on()
    return {DECIDED_VAR: " ".join(f"{t}={i}" for t, i in sorted(bound.items()))} if bound else {}


def hold_decision(kind: str, name: str, current: Callable[[], str | None]) -> None:
    """Refuse, under the lock of the app or service, when what is under ``name`` now
    (``current()``: its incarnation, None when there is none) is not what the caller's
    access was decided on: it was destroyed, perhaps made again, since the command began."""
    bound = decided_on().get(target(kind, name))
    if bound is None:
        return
    now = current()
    if now != bound:
        again = " and made again" if now is not None else ""
        raise AccessDenied(
            f"{kind} {name!r} was destroyed{again} since this command was allowed on it: "
            "nothing done"
        )
