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
