"""One entry point for every door: argv + identity + streams in, exit code out.

Routing: a built-in verb (``services:create``; with ``--help`` its usage), a built-in
namespace's help (``config:help``, ``config``), else ``PLUGIN:CMD`` / ``PLUGIN`` for an
installed plugin (by name or its ``commands/name`` alias), else exit 127 with a
did-you-mean. This is also the one place where errors become a message and an exit code.
"""

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from gokku import access
from gokku.cmdline import parse
from gokku.commands import (
    BUILTINS,
    KEEPS_ROOT,
    NAMESPACES,
    PLUGIN_FORMS,
    Builtin,
    asks_help,
    usage_line,
)
from gokku.context import Context, Request
from gokku.errors import AccessDenied, GokkuError, NotFound, UnknownCommand, UsageError
from gokku.names import check_name
from gokku.paths import Root

if TYPE_CHECKING:
    from gokku.plugins.manifest import CommandIO
    from gokku.plugins.registry import Plugin

GLOBAL_USAGE = "gokku [--quiet] [--trace] [--format text|json] [-a APP] COMMAND [ARGS...]"
FORMATS = ("text", "json", "shell")


def dispatch(
    request: Request, root: Root | None = None, prepare: Callable[[Root], None] | None = None
) -> int:
    """Run the request to completion and return its exit code; never raises.

    ``prepare`` runs once the verb is known, inside the error handling (the CLI door
    changes user there, but for the verbs in ``KEEPS_ROOT``).
    Anything that is not a GokkuError is unexpected: a bug, or the system refusing (a
    full disk). The user gets one line and exit 1; the traceback goes to the server log.
    """
    try:
        root = root or Root.from_env()
        ctx, verb, args = _global_flags(request, root)
        if prepare is not None and verb not in KEEPS_ROOT:
            prepare(root)
        if ctx.trace:
            access.require_admin(ctx, "use --trace (it shows what scripts read, secrets too)")
        with access.decided(request.identity):
            code = route(ctx, verb, args)
        # A bare ``gokku`` (or an SSH session with no command) is a usage error.
        return 2 if not request.argv and code == 0 else code
    except NotFound as exc:
        if isinstance(exc, AccessDenied):
            request.denied = exc.message
        _report(request, exc.message + _similar(request, root, exc))
        return exc.exit_code
    except GokkuError as exc:
        _report(request, exc.message)
        return exc.exit_code
    except BrokenPipeError:
        return 141
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from gokku import crashlog

        _report(request, crashlog.unexpected(root, request.argv, exc))
        return 1


def _similar(request: Request, root: Root | None, exc: NotFound) -> str:
    """``; did you mean 'api'?`` for an unknown app or service: the closest name the
    caller may read (a member learns no name it could not list)."""
    if root is None:
        return ""
    from gokku import suggest

    return suggest.similar_name(root, request.identity, exc.kind, exc.name, exc.plugin)


def _report(request: Request, message: str) -> None:
    try:
        request.stderr.write(f" !     {message}\n".encode())
        request.stderr.flush()
    except (OSError, ValueError):
        pass  # the client is gone (EPIPE, or EIO from its pty): nobody left to tell


def _global_flags(request: Request, root: Root) -> tuple[Context, str, list[str]]:
    """Split ``[FLAGS] VERB ARGS`` where flags come before the verb, as in Dokku."""
    argv = request.argv
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        index += 1
        if argv[index - 1] in ("--format", "-a", "--app") and index < len(argv):
            index += 1
    flags = parse(
        argv[:index],
        GLOBAL_USAGE,
        values={"--format": "format", "-a": "app", "--app": "app"},
        flags={
            "--quiet": "quiet",
            "-q": "quiet",
            "--trace": "trace",
            "--help": "help",
            "-h": "help",
            "--version": "version",
        },
        max_args=0,
    )
    app = flags.get("app")
    if app is not None:
        check_name("app", app)  # before it names a path or reaches a script (GOKKU_APP)
    fmt = flags.get("format", "text")
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    rest = argv[index:]
    if flags.flag("version"):
        rest = ["version"]
    elif flags.flag("help") or not rest:
        rest = ["help", *rest]
    ctx = Context(
        request=request,
        root=root,
        quiet=flags.flag("quiet"),
        trace=flags.flag("trace"),
        format=fmt,
        app=app,
        verb=rest[0],
    )
    return ctx, rest[0], rest[1:]


def _function(builtin: Builtin) -> Callable[..., int]:
    return getattr(importlib.import_module(builtin.module), builtin.function)


def route(ctx: Context, verb: str, args: list[str]) -> int:
    builtin = BUILTINS.get(verb)
    if builtin is not None:
        access.check_verb(ctx, verb, builtin.access)
        access.require_named_app(ctx, builtin.access)
        if asks_help(args):
            from gokku.commands import help as help_

            return help_.usage(ctx, usage_line(verb), builtin.summary)
        return _function(builtin)(ctx, args)
    from gokku.plugins import registry

    namespace, _, command = verb.partition(":")
    if namespace in NAMESPACES and command in ("", "help"):
        from gokku.commands import help as help_

        return help_.namespace_help(ctx, namespace, args)
    plugin = registry.find(ctx.root, namespace)
    if plugin is not None:
        registry.require_enabled(plugin)
        return _plugin_command(ctx, plugin, namespace, command or "help", args)
    from gokku import suggest

    raise UnknownCommand(f"unknown command {verb!r}{suggest.hint(ctx, verb)}")


def _plugin_command(
    ctx: Context, plugin: "Plugin", namespace: str, command: str, args: list[str]
) -> int:
    """The plugin's own script of that name wins; else Dokku's form of a services verb
    (``pg:link db api`` is ``services:link db -a api``), with that verb's access.
    With ``--help``/``-h``, the command's usage."""
    if asks_help(args):
        from gokku.commands import help as help_

        return help_.plugin_command(ctx, plugin, namespace, command)
    form = PLUGIN_FORMS.get(command)
    if form is not None and plugin.script(command) is None:
        verb = f"{namespace}:{command}"
        access.check_verb(ctx, verb, form.access)
        access.require_named_app(ctx, form.access)
        return _function(form)(ctx, plugin, verb, args)
    from gokku.commands.plugin_exec import app_after_verb, run_plugin_command

    args = app_after_verb(ctx, plugin, command, args)
    access.require_named_app(ctx, plugin.access(command))
    return run_plugin_command(ctx, plugin, namespace, command, args)


def command_io(argv: list[str], root: Root | None = None) -> "CommandIO":
    """How the command in ``argv`` uses the terminal, for a door deciding on a pty.

    Anything that does not resolve to a plugin command (built-ins, typos, bad flags) gets
    the defaults; the real dispatch reports the error.
    """
    from gokku.context import Identity
    from gokku.plugins import registry
    from gokku.plugins.manifest import CommandIO

    try:
        request = Request(argv=argv, identity=Identity(name=""))
        ctx, verb, _ = _global_flags(request, root or Root.from_env())
        namespace, _, command = verb.partition(":")
        plugin = None if verb in BUILTINS else registry.find(ctx.root, namespace)
    except GokkuError:
        return CommandIO()
    return plugin.io(command or "help") if plugin else CommandIO()
