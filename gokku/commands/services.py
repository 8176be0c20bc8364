"""``services:*`` verbs: create, list, info, logs, link, unlink, destroy, start, stop. The
hidden verbs the plugin helpers call back into are ``gokku.commands.service_config``'s.

Dokku's forms of the same verbs (``PLUGIN:create SVC``, ``PLUGIN:link SVC APP``...; the
``*_form`` functions, routed by ``PLUGIN_FORMS``) only parse their own arguments and call
the same implementation, which refuses a service of another plugin.
"""

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

from gokku import access, apps, confirm, keys, schedules, services
from gokku.cmdline import Parsed, parse
from gokku.commands import APP_VALUES, form_usage, usage_line
from gokku.commands.apps import finish_destroy
from gokku.commands.doctor import report_cheap
from gokku.commands.plugin_exec import authorize, run_for
from gokku.context import Context
from gokku.errors import GokkuError, NotFound, ScriptFailed, UsageError
from gokku.names import check_alias, check_name
from gokku.plugins import registry, settings
from gokku.runner import forward_to_group, run_script, spawn_captured
from gokku.ssh.config import load as load_config

FORCE = {"--force": "force", "-f": "force"}
ENV = {"--env": "env", "-e": "env"}


def _plugin_of(
    ctx: Context, service: services.Service, expect: registry.Plugin | None = None
) -> registry.Plugin:
    """The service's plugin; ``expect`` is the plugin a Dokku form was called through."""
    if expect is not None and service.plugin != expect.name:
        raise GokkuError(
            f"service {service.name!r} belongs to plugin {service.plugin!r}, not {expect.name!r}"
        )
    try:
        return registry.require_enabled(registry.load(ctx.root, service.plugin))
    except NotFound:
        raise GokkuError(
            f"service {service.name!r} was made by plugin {service.plugin!r}, "
            "which is no longer installed"
        ) from None


def _service_env(ctx: Context, name: str) -> dict[str, str]:
    return {"SERVICE_NAME": name, "GOKKU_SERVICE_DIR": str(ctx.root.service_dir(name))}


def _script(plugin: registry.Plugin, command: str) -> Path:
    """A contract script (``install``, ``info``...) that must exist."""
    script = plugin.script(command)
    if script is None:
        raise GokkuError(f"plugin {plugin.name!r} has no {command} script")
    return script


def _run(
    ctx: Context, plugin: registry.Plugin, command: str, args: list[str], last: bool = False
) -> int:
    script = _script(plugin, command)
    return run_script(ctx, plugin, script, args, _service_env(ctx, args[0]), last=last)


def create(ctx: Context, args: list[str]) -> int:
    usage = usage_line("services:create")
    opts = parse(args, usage, values={"--name": "name", "-n": "name"}, min_args=1, max_args=1)
    plugin_name, _, version = opts.positional[0].partition(":")
    name = opts.get("name")
    if not name:
        raise UsageError(f"missing --name; usage: {usage}")
    check_name("service", name)
    plugin = registry.find(ctx.root, check_name("plugin", plugin_name))
    if plugin is None:
        raise NotFound(f"plugin {plugin_name!r} is not installed (see: gokku plugins:list)")
    return _create(ctx, registry.require_enabled(plugin), name, version)


def create_form(ctx: Context, plugin: registry.Plugin, verb: str, args: list[str]) -> int:
    """``PLUGIN:create SVC [VERSION]``."""
    opts = parse(args, form_usage(verb), min_args=1, max_args=2)
    version = opts.positional[1] if len(opts.positional) == 2 else ""
    return _create(ctx, plugin, check_name("service", opts.positional[0]), version)


def _create(ctx: Context, plugin: registry.Plugin, name: str, version: str) -> int:
    if plugin.script("install") is None:
        raise GokkuError(f"plugin {plugin.name!r} has no install script")
    _undo_cut_off_create(ctx, name)
    with services.service_lock(ctx.root, name):
        if services.exists(ctx.root, name):
            raise GokkuError(f"service {name!r} already exists")
        if ctx.root.service_dir(name).exists():
            raise GokkuError(
                f"{ctx.root.service_dir(name)} exists but is no service: it was left alone; "
                "move it away or choose another name"
            )
        service = services.place(ctx.root, name, services.new_record(name, plugin.name, version))
        ctx.info(f"Creating {plugin.name} service {name}")
        code = _run(ctx, plugin, "install", [name, version])
        if code != 0:
            if plugin.script("uninstall") is not None:
                _run(ctx, plugin, "uninstall", [name])
            services.remove_dir(ctx.root, service)
            raise ScriptFailed(
                f"creating service {name!r} failed: {plugin.name} install exited {code}; "
                "nothing was kept",
                code,
            )
        services.settle(ctx.root, name)
    ctx.info(f"Service {name} created")
    return 0


def _undo_cut_off_create(ctx: Context, name: str) -> None:
    """A record still ``creating`` under the lock belongs to a create that died: undo it
    (its links, its uninstall, best effort, then the directory) before anything else uses
    the name. Under the locks of its apps, then its own (the global order)."""
    if not services.exists(ctx.root, name):
        return
    with services.locked_with_its_apps(ctx.root, name) as service:
        if service.data.get("state") != services.CREATING:
            return
        ctx.warn(f"a create of service {name!r} was cut off: undoing it first")
        for record in list(service.links):
            _unlink_one(ctx, name, record["app"], record["env"])
        with contextlib.suppress(GokkuError):
            plugin = _plugin_of(ctx, service)
            if plugin.script("uninstall") is not None:
                _run(ctx, plugin, "uninstall", [name])
        services.remove_dir(ctx.root, service)


def list_(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("services:list"), values={"--format": "format"}, max_args=0)
    return _list(ctx, opts.get("format", ctx.format), None)


def list_form(ctx: Context, plugin: registry.Plugin, verb: str, args: list[str]) -> int:
    """``PLUGIN:list``: services:list narrowed to the plugin's services."""
    opts = parse(args, form_usage(verb), values={"--format": "format"}, max_args=0)
    return _list(ctx, opts.get("format", ctx.format), plugin)


def _list(ctx: Context, fmt: str, plugin: registry.Plugin | None) -> int:
    """The services the caller may read (of ``plugin`` only, when given)."""
    shown = [
        s
        for s in services.all_services(ctx.root)
        if access.allows(ctx.request.identity, "service", s.name, access.READ)
        and (plugin is None or s.plugin == plugin.name)
    ]
    statuses = _statuses(ctx, shown)
    identity = ctx.request.identity
    records = [
        {
            "name": s.name,
            "plugin": s.plugin,
            # The record's version, else the one the plugin recorded (config.version).
            "version": s.data.get("version") or str(s.config.get("version") or ""),
            "status": statuses[s.name],
            # Only the apps the caller may read: a member learns no other app's name.
            "linked_apps": access.visible(identity, "app", s.data.get("linked_apps", [])),
            "created_at": s.data.get("created_at", ""),
        }
        for s in shown
    ]
    ctx.listing(
        fmt,
        records,
        f"No {plugin.name} services" if plugin else "No services",
        ["NAME", "PLUGIN", "VERSION", "STATUS", "LINKED APPS", "CREATED"],
        lambda r: [
            r["name"],
            r["plugin"],
            r["version"] or "-",
            r["status"],
            ",".join(r["linked_apps"]) or "-",
            r["created_at"],
        ],
    )
    return 0


# services:list asks each plugin's ``status`` command, all at once, and waits this long
# in all: a listing stays quick, and a plugin that hangs shows ``unknown``, not a hang.
STATUS_SECONDS = 2.0
STATUSES = ("running", "stopped", "paused")
UNKNOWN = "unknown"
NO_STATUS = "-"  # the plugin has no status command (or is no longer installed)


def _statuses(ctx: Context, shown: list[services.Service]) -> dict[str, str]:
    """Each service's status: ``running``/``stopped`` as its plugin says, ``unknown``
    when the plugin fails, answers something else or is too slow, ``-`` without one;
    ``creating`` (not asked) while it is created, or when its create was cut off."""
    creating = {s.name for s in shown if s.data.get("state") == services.CREATING}
    started = {s.name: _start_status(ctx, s) for s in shown if s.name not in creating}
    _await_all([p for p in started.values() if p is not None], time.monotonic() + STATUS_SECONDS)
    answers = {name: NO_STATUS if p is None else _answer(p) for name, p in started.items()}
    return {**answers, **dict.fromkeys(creating, services.CREATING)}


def _start_status(ctx: Context, service: services.Service) -> subprocess.Popen | None:
    try:
        plugin = registry.load(ctx.root, service.plugin)
    except NotFound:
        return None
    script = None if plugin.disabled else plugin.script("status")
    if script is None:
        return None
    return spawn_captured(ctx, plugin, script, [service.name], _service_env(ctx, service.name))


def _await_all(procs: list[subprocess.Popen], deadline: float) -> None:
    """Wait until every status command has exited or the deadline has passed, then kill
    each one's group: what still runs, and what a finished one left behind holding its
    pipe. Each is reaped only after that, so its pid still names its group when killed."""
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        pending = [p for p in pending if not _exited(p)]
        if pending:
            time.sleep(0.01)
    for proc in procs:
        forward_to_group(proc.pid, signal.SIGKILL)
        proc.wait()


def _exited(proc: subprocess.Popen) -> bool:
    """Whether it has exited, without reaping it."""
    return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None


def _answer(proc: subprocess.Popen) -> str:
    """What a reaped status command wrote (its pipe holds all of it: nothing that could
    write is left), when it exited 0 with one of STATUSES."""
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    try:
        out = os.read(fd, 4096)
    except BlockingIOError:
        out = b""
    proc.stdout.close()
    answer = out.decode("utf-8", "replace").strip()
    return answer if proc.returncode == 0 and answer in STATUSES else UNKNOWN


def _passthrough(ctx: Context, args: list[str], command: str) -> int:
    if not args:
        raise UsageError(f"missing service name; usage: {usage_line('services:' + command)}")
    name = check_name("service", args[0])
    access.require(ctx, "service", name, access.READ)  # before load: no existence probing
    plugin = _plugin_of(ctx, services.load(ctx.root, name))
    authorize(ctx, plugin, f"services:{command}", command, name)
    return run_for(ctx, plugin, command, _script(plugin, command), args, name, plugin.io(command))


def info(ctx: Context, args: list[str]) -> int:
    return _passthrough(ctx, args, "info")


def logs(ctx: Context, args: list[str]) -> int:
    return _passthrough(ctx, args, "logs")


ALIAS = {"--alias": "alias"}


def _link_args(
    ctx: Context, verb: str, args: list[str], more: dict[str, str] | None = None
) -> tuple[str, str, str, Parsed]:
    """``SVC -a APP [--env ENV]`` and the options ``more`` names (``--alias``)."""
    usage = usage_line(verb)
    values = {"-a": "app", "--app": "app", **ENV, **(more or {})}
    opts = parse(args, usage, values=values, min_args=1, max_args=1)
    app = opts.get("app", ctx.app)
    if not app:
        raise UsageError(f"missing -a APP; usage: {usage}")
    return (*_link_target(ctx, opts.positional[0], app, opts.get("env")), opts)


def _form_link_args(
    ctx: Context, verb: str, args: list[str], more: dict[str, str] | None = None
) -> tuple[str, str, str, Parsed]:
    """Dokku's ``SVC APP [--env ENV]``; the app may be ``-a APP`` after the verb instead
    (as for every verb that takes an app), else it is the global -a."""
    usage = form_usage(verb)
    values = {**APP_VALUES, **ENV, **(more or {})}
    opts = parse(args, usage, values=values, min_args=1, max_args=2)
    named = [*opts.positional[1:], *filter(None, [opts.get("app")])]
    if len(set(named)) > 1:
        raise UsageError(f"two apps given ({' and '.join(named)}); usage: {usage}")
    app = named[0] if named else ctx.app
    if not app:
        raise UsageError(f"missing APP; usage: {usage}")
    return (*_link_target(ctx, opts.positional[0], app, opts.get("env")), opts)


def _link_target(ctx: Context, name: str, app: str, env: str | None) -> tuple[str, str, str]:
    """Checked names, and write access to both sides of the link."""
    check_name("service", name)
    check_name("app", app)
    access.require(ctx, "app", app, access.WRITE)
    access.require(ctx, "service", name, access.WRITE)
    return name, app, check_name("environment", env or apps.DEFAULT_ENV)


def _alias(opts: Parsed) -> str | None:
    alias = opts.get("alias")
    return None if alias is None else check_alias(alias)


def _hook(ctx: Context, name: str, hook: str, app: str, env: str) -> None:
    """Run the plugin's ``hooks/HOOK`` for a link just made or removed; a disabled
    plugin's hooks do not run (as its deploy triggers do not)."""
    service = services.load(ctx.root, name)
    if settings.load(ctx.root, service.plugin).disabled:
        return
    plugin = _plugin_of(ctx, service)
    script = plugin.hook(hook)
    if script is not None:
        code = run_script(ctx, plugin, script, [name, app, env], _service_env(ctx, name))
        if code != 0:
            raise ScriptFailed(f"{plugin.name} {hook} hook exited {code}", code)


def link(ctx: Context, args: list[str]) -> int:
    name, app, env, opts = _link_args(ctx, "services:link", args, ALIAS)
    return _link(ctx, name, app, env, _alias(opts))


def link_form(ctx: Context, plugin: registry.Plugin, verb: str, args: list[str]) -> int:
    """``PLUGIN:link SVC APP [--alias NAME]``."""
    name, app, env, opts = _form_link_args(ctx, verb, args, ALIAS)
    return _link(ctx, name, app, env, _alias(opts), plugin)


def _link(
    ctx: Context,
    name: str,
    app: str,
    env: str,
    alias: str | None,
    expect: registry.Plugin | None = None,
) -> int:
    _expect_plugin(ctx, name, expect)
    keys = services.link(ctx.root, name, app, env, alias)
    written = ", ".join(keys) or "no variables written (its plugin exports none)"
    ctx.info(f"Linked {name} to {app} ({env}): {written}")
    _hook(ctx, name, "post-link", app, env)
    return 0


def _expect_plugin(ctx: Context, name: str, expect: registry.Plugin | None) -> None:
    """A Dokku form acts only on its own plugin's services."""
    if expect is not None:
        _plugin_of(ctx, services.load(ctx.root, name), expect)


def unlink(ctx: Context, args: list[str]) -> int:
    return _unlink(ctx, *_link_args(ctx, "services:unlink", args)[:3])


def unlink_form(ctx: Context, plugin: registry.Plugin, verb: str, args: list[str]) -> int:
    """``PLUGIN:unlink SVC APP``."""
    return _unlink(ctx, *_form_link_args(ctx, verb, args)[:3], plugin)


def _unlink(
    ctx: Context, name: str, app: str, env: str, expect: registry.Plugin | None = None
) -> int:
    _expect_plugin(ctx, name, expect)
    _unlink_one(ctx, name, app, env)
    _hook(ctx, name, "post-unlink", app, env)
    return 0


def _unlink_one(ctx: Context, name: str, app: str, env: str) -> None:
    """Remove one link and say what went with it (unlink, and destroy --force)."""
    keys = services.unlink(ctx.root, name, app, env)
    removed = ", ".join(keys) or "no variables"
    ctx.info(f"Unlinked {name} from {app} ({env}): removed {removed}")


def promote(ctx: Context, args: list[str]) -> int:
    return _promote(ctx, *_link_args(ctx, "services:promote", args)[:3])


def promote_form(ctx: Context, plugin: registry.Plugin, verb: str, args: list[str]) -> int:
    """``PLUGIN:promote SVC APP``."""
    return _promote(ctx, *_form_link_args(ctx, verb, args)[:3], plugin)


def _promote(
    ctx: Context, name: str, app: str, env: str, expect: registry.Plugin | None = None
) -> int:
    _expect_plugin(ctx, name, expect)
    done = services.promote(ctx.root, name, app, env)
    ctx.info(f"Promoted {name} on {app} ({env}): {', '.join(done.keys)}")
    for other, alias in done.kept.items():
        ctx.info(f"{other} is kept under its alias {alias} ({alias}_*)")
    return 0


def destroy(ctx: Context, args: list[str]) -> int:
    opts = parse(args, usage_line("services:destroy"), flags=FORCE, min_args=1, max_args=1)
    return _destroy(ctx, check_name("service", opts.positional[0]), opts.flag("force"))


def destroy_form(ctx: Context, plugin: registry.Plugin, verb: str, args: list[str]) -> int:
    """``PLUGIN:destroy SVC [--force]`` of a plugin without a destroy script of its own."""
    opts = parse(args, form_usage(verb), flags=FORCE, min_args=1, max_args=1)
    return _destroy(ctx, check_name("service", opts.positional[0]), opts.flag("force"), plugin)


def _unless_linked(service: services.Service, force: bool) -> services.Service:
    if service.links and not force:
        where = ", ".join(f"{x['app']} ({x['env']})" for x in service.links)
        raise GokkuError(
            f"service {service.name!r} is linked to {where}; unlink first or use --force"
        )
    return service


def _forced_unlink(ctx: Context, name: str, app: str, env: str) -> None:
    """An unlink on the way to destroying the service: the plugin's post-unlink hook runs
    as for ``services:unlink`` (it may undo what post-link set up), but a failing hook
    does not stop a forced destroy halfway; it is reported."""
    _unlink_one(ctx, name, app, env)
    try:
        _hook(ctx, name, "post-unlink", app, env)
    except ScriptFailed as exc:
        ctx.warn(f"{exc.message}; destroying {name} anyway")


def _destroy(ctx: Context, name: str, force: bool, expect: registry.Plugin | None = None) -> int:
    if not services.exists(ctx.root, name) and finish_destroy(ctx, "service", name):
        return 0
    service = _unless_linked(services.load(ctx.root, name), force)  # before asking
    lost = [f"the {service.plugin} service and all its data ({service.path})"]
    confirm.destroy(ctx, "service", name, lost, force)
    with services.locked_with_its_apps(ctx.root, name) as service:
        cut_off = service.data.get("state") == services.CREATING
        plugin = _plugin_of(ctx, _unless_linked(service, force), expect)
        for record in list(service.links):
            _forced_unlink(ctx, name, record["app"], record["env"])
        ctx.info(f"Destroying service {name}")
        if plugin.script("uninstall") is not None:
            code = _run(ctx, plugin, "uninstall", [name])
            if code != 0 and cut_off:
                ctx.warn(f"uninstall exited {code}; the service was never fully created")
            elif code != 0:
                raise ScriptFailed(
                    f"{plugin.name} uninstall of {name!r} exited {code}; the service is kept",
                    code,
                )
        scheduled = schedules.had_schedules(ctx.root, name)
        services.remove_dir(ctx.root, service)
        if scheduled:  # its records went with the directory: their cron lines go now
            _render_schedules(ctx)
        services.release_port(ctx.root, service.config.get("port"))
        keys.drop_grants(ctx.root, load_config(ctx.root), access.target("service", name))
    ctx.info(f"Service {name} destroyed")
    return 0


def _render_schedules(ctx: Context) -> None:
    """The crontab without the destroyed service's lines; the service is gone whatever
    happens here, so a failure is a warning (doctor, or the next change, finishes it)."""
    try:
        schedules.render(ctx.root)
    except GokkuError as exc:
        ctx.warn(f"{exc.message}; its cron lines are left (repair: gokku doctor --fix)")


# ---- services:start / services:stop: the servers of native services, e.g. at boot ----


def start(ctx: Context, args: list[str]) -> int:
    return _control(ctx, args, "start")


def stop(ctx: Context, args: list[str]) -> int:
    return _control(ctx, args, "stop")


def _control(ctx: Context, args: list[str], command: str) -> int:
    """Run the plugin's ``start``/``stop`` command for one service, or for all (``--all``).

    At boot (``ops/gokku-services.service``) one service that fails must not keep the
    others down: each is tried and the failures are named at the end. Services whose
    plugin has no such command (a container engine restarts its own) are skipped.
    """
    usage = usage_line(f"services:{command}")
    opts = parse(args, usage, flags={"--all": "all"}, max_args=1)
    if opts.flag("all") == bool(opts.positional):
        raise UsageError(f"give one service or --all; usage: {usage}")
    if opts.positional:
        name = check_name("service", opts.positional[0])
        access.require(ctx, "service", name, access.READ)  # before load: no existence probing
        return _control_one(ctx, name, command, False)
    access.require_admin(ctx, f"{command} every service")
    if command == "start":  # at boot: where leftovers of a crash are worth a line
        report_cheap(ctx)
    failed = []
    for service in services.all_services(ctx.root):
        try:
            code = _control_one(ctx, service.name, command, True)
        except GokkuError as exc:
            ctx.warn(exc.message)
            code = exc.exit_code
        if code != 0:
            failed.append(service.name)
    if failed:
        raise GokkuError(f"could not {command} {len(failed)} service(s): {', '.join(failed)}")
    return 0


def _control_one(ctx: Context, name: str, command: str, skip_missing: bool) -> int:
    with services.service_lock(ctx.root, name):
        service = services.load(ctx.root, name)
        if skip_missing and settings.load(ctx.root, service.plugin).disabled:
            ctx.info(f"{name}: plugin {service.plugin} is disabled; skipped")
            return 0
        plugin = _plugin_of(ctx, service)
        authorize(ctx, plugin, f"services:{command}", command, name)
        if skip_missing and plugin.script(command) is None:
            ctx.info(f"{name}: plugin {plugin.name} has no {command} command; skipped")
            return 0
        return _run(ctx, plugin, command, [name], last=not skip_missing)
