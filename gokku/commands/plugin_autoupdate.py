"""``plugins:auto-update on|off [--level patch|minor] [--cooldown HOURS]``, and ``run``:
what its cron line runs (also by hand, on the server).

A run moves each index plugin not pinned at a version, one at a time, to the newest
version the ranges and the pin on it, the level and the cooldown allow
(``gokku.plugins.autoupdate``), with the installed plugins it then requires. Each plan
is installed as ``plugins:update`` installs one (fetched, checked against its signed
entry, validated), then each new version's ``hooks/post-update`` runs; any failure
takes the plan back, the previous versions in place. One audit line per plugin moved
says what happened, a rollback too.
"""

import time

from gokku import audit, schedules
from gokku.cmdline import parse
from gokku.commands import usage_line
from gokku.commands.plugin_index import Pins, index_lookup, installed_versions, pinned
from gokku.context import Context
from gokku.errors import AuditFailed, GokkuError, ScriptFailed, UsageError
from gokku.plugins import autoupdate, install, plan, registry
from gokku.runner import run_script
from gokku.storage import lock

VERB = "plugins:auto-update"
HOOK = "post-update"


def auto_update(ctx: Context, args: list[str]) -> int:
    usage = usage_line(VERB)
    values = {"--level": "level", "--cooldown": "cooldown"}
    opts = parse(args, usage, values=values, max_args=1)
    action = opts.positional[0] if opts.positional else None  # None: show the state
    if action not in (None, "on", "off", "run"):
        raise UsageError(f"unknown action {action!r}; usage: {usage}")
    if action in (None, "off") and (opts.get("level") or opts.get("cooldown")):
        raise UsageError(f"--level and --cooldown go with on or run; usage: {usage}")
    if action == "run":
        return run(ctx, opts.get("level"), opts.get("cooldown"))
    with lock(ctx.root.locks, "plugin-auto-update"):
        if action == "on":
            level = autoupdate.check_level(opts.get("level") or autoupdate.DEFAULT_LEVEL)
            hours = opts.get("cooldown")
            cooldown = (
                autoupdate.check_cooldown(hours) if hours else autoupdate.DEFAULT_COOLDOWN_HOURS
            )
            autoupdate.turn_on(ctx.root, level, cooldown)
            schedules.render(ctx.root)
        elif action == "off":
            autoupdate.turn_off(ctx.root)
            schedules.render(ctx.root)
        state = autoupdate.load(ctx.root)
    if state is None:
        ctx.out("Automatic plugin updates: off")
    else:
        ctx.out(
            f"Automatic plugin updates: on, {state['level']} level, versions at least "
            f"{state['cooldown_hours']:g} h in their index, daily at '{state['cron']}' (cron)"
        )
    return 0


def run(ctx: Context, level_text: str | None, cooldown_text: str | None) -> int:
    """Update what may be updated; non-zero when any plugin failed (and was rolled back)."""
    state = autoupdate.load(ctx.root) or {}
    level = autoupdate.check_level(level_text or state.get("level") or autoupdate.DEFAULT_LEVEL)
    hours = (
        autoupdate.check_cooldown(cooldown_text)
        if cooldown_text
        else float(state.get("cooldown_hours", autoupdate.DEFAULT_COOLDOWN_HOURS))
    )
    cutoff = time.time() - hours * 3600
    plugins = [p for p in registry.installed(ctx.root) if p.record.get("index")]
    lookup = index_lookup(ctx)
    failed = []
    for name in sorted(p.name for p in plugins if not p.settings.frozen):
        installed = installed_versions(ctx)
        eligible = autoupdate.eligible(lookup, installed, level, cutoff)
        pins = Pins(pinned(plugins), installed, eligible)
        try:
            if name in pins.stuck:
                raise GokkuError(pins.stuck[name])
            resolver = plan.Resolver(installed, eligible, upgrade=frozenset({name}))
            steps = resolver.resolve(pins.asked([name]))
        except GokkuError as exc:
            ctx.warn(f"{name}: not updated: {exc.message}")
            failed.append(name)
            continue
        new = [step.name for step in steps if step.previous is None]
        if new:
            needs = ", ".join(new)
            ctx.warn(f"{name}: its update needs {needs} installed: run plugins:update {name}")
            continue
        if steps and not _update(ctx, steps):
            failed.append(name)
    if failed:
        raise GokkuError(f"not updated: {', '.join(failed)} (see the lines above)")
    return 0


def _update(ctx: Context, steps: list[plan.Step]) -> bool:
    """Install the plan and check its health; take it back on any failure. Whether it
    stayed. Each plugin moved gets its audit line."""
    ctx.info("Plan: " + "; ".join(step.describe() for step in steps))
    try:
        install.apply(ctx, steps, check=lambda: _health(ctx, steps))
    except GokkuError as exc:
        for step in steps:
            _audit(ctx, step, f"rolled back to {step.previous}: {exc.message}", exc.exit_code)
        ctx.warn(f"rolled back: {exc.message}")
        return False
    for step in steps:
        _audit(ctx, step, "updated", 0)
    return True


def _health(ctx: Context, steps: list[plan.Step]) -> None:
    """Each new version's ``hooks/post-update PREVIOUS VERSION``, when it has one."""
    for step in steps:
        plugin = registry.load(ctx.root, step.name)
        script = plugin.hook(HOOK)
        if script is None:
            continue
        code = run_script(ctx, plugin, script, [step.previous or "", step.version])
        if code != 0:
            raise ScriptFailed(f"{step.name} {step.version}: {HOOK} hook exited {code}", code)


def _audit(ctx: Context, step: plan.Step, outcome: str, code: int) -> None:
    identity = ctx.request.identity
    entry = audit.Entry(
        identity.name,
        identity.fingerprint,
        identity.remote,
        [*autoupdate.VERB, step.name, f"{step.previous}->{step.version}"],
        exit=code,
        outcome=outcome,
    )
    try:
        audit.write(ctx.root, entry)
    except AuditFailed as exc:
        ctx.warn(exc.message)
