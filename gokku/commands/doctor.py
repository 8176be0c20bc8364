"""``doctor [--fix]``: the state checked for what interrupted commands left behind."""

from gokku import doctor as checks
from gokku import sandbox
from gokku.cmdline import parse
from gokku.commands import usage_line
from gokku.context import Context
from gokku.errors import GokkuError


def doctor(ctx: Context, args: list[str]) -> int:
    """One line per finding. Without ``--fix`` nothing changes and the exit code says
    whether anything was found (1) or not (0); with it, what is safe is repaired and the
    exit code says whether anything is left."""
    opts = parse(args, usage_line("doctor"), flags={"--fix": "fix"}, max_args=0)
    warn_settings(ctx)
    findings = checks.examine(ctx.root)
    if not findings:
        ctx.out("ok: nothing to report")
        return 0
    if not opts.flag("fix"):
        for finding in findings:
            ctx.out(finding.message)
        return 1
    left = 0
    for finding in findings:
        try:
            done = finding.fix() if finding.fix is not None else None
        except GokkuError as exc:
            left += 1
            ctx.out(f"not fixed: {finding.message} ({exc.message})")
            continue
        if done is None:
            left += 1
            ctx.out(f"not fixed: {finding.message}")
        else:
            ctx.out(f"fixed: {finding.message} ({done})")
    return 1 if left else 0


def report_cheap(ctx: Context) -> None:
    """What the cheap checks find, one warning each, changing nothing: for the start of
    the server and of every service, where an operator looks."""
    warn_settings(ctx)
    for finding in checks.examine(ctx.root, cheap_only=True):
        ctx.warn(f"doctor: {finding.message} (repair: gokku doctor --fix)")


def warn_settings(ctx: Context) -> None:
    """What an admin chose that leaves the server open to apps' code: a warning on stderr,
    not a finding (nothing is broken, there is nothing to repair)."""
    warning = sandbox.warning(ctx.root)
    if warning:
        ctx.warn(warning)
