"""Asking before destroying what cannot be brought back, as Dokku does.

On a terminal the user types the name of what goes; anywhere else (a script, ``ssh``
without ``-t``) nothing is destroyed unless ``--force`` says the caller means it. Either
way the message says what will be lost. The question is asked before any lock is taken:
nobody else waits while a person reads it.
"""

import os

from gokku.context import Context
from gokku.errors import GokkuError

MAX_ANSWER = 256


def destroy(ctx: Context, what: str, name: str, losses: list[str], force: bool) -> None:
    """Return when destroying ``what`` ``name`` is confirmed, else raise (nothing done)."""
    if force:
        return
    lost = "; ".join(losses)
    stdin = ctx.request.stdin
    if not os.isatty(stdin.fileno()):
        raise GokkuError(
            f"destroying {what} {name!r} deletes {lost}: confirm on a terminal "
            f"(ssh -t) or add --force"
        )
    ctx.warn(f"Destroying {what} {name!r} deletes {lost}.")
    ctx.request.stderr.write(f' !     To proceed, type "{name}": '.encode())
    ctx.request.stderr.flush()
    answer = stdin.readline(MAX_ANSWER).decode("utf-8", "replace").strip()
    if answer != name:
        raise GokkuError(f"confirmation did not match {name!r}: nothing was destroyed")


def proceed(ctx: Context, what: str, yes: bool) -> None:
    """Return when a plan just shown is confirmed (``--yes``, or "y" on a terminal)."""
    if yes:
        return
    if not os.isatty(ctx.request.stdin.fileno()):
        raise GokkuError(f"{what}: confirm the plan on a terminal (ssh -t) or add --yes")
    ctx.request.stderr.write(b" !     Proceed? [y/N] ")
    ctx.request.stderr.flush()
    answer = ctx.request.stdin.readline(MAX_ANSWER).decode("utf-8", "replace").strip()
    if answer.lower() not in ("y", "yes"):
        raise GokkuError("not confirmed: nothing was changed")
