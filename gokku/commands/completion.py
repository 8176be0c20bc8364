"""``completion bash|zsh|fish``: a shell completion script; ``completion --words [--]
WORDS...``: what may come next after the words typed, asked for at each completion.

The script is built from the command table (the visible built-in verbs and the global
flags), so it needs no update when a plugin comes or goes: the rest comes from
``completion --words`` at completion time, on the server when ``gokku`` is a client, and
for the caller's key there. With no verb typed yet it prints the verbs the caller may run
(plugins' included); after a verb, what its usage line says comes next: the apps after
``APP`` (and ``-a``), the services after ``SVC``, the words of ``branch|wait``; only
the names the caller may see.
"""

import re
from pathlib import Path

from gokku import access
from gokku.cmdline import parse
from gokku.commands import BUILTINS, PLUGIN_FORMS, plugin_commands, usage_line
from gokku.context import Context
from gokku.errors import UsageError
from gokku.plugins.manifest import SERVICE_WORDS

TEMPLATES = Path(__file__).resolve().parent.parent / "data"
SHELLS = ("bash", "zsh", "fish")
# Before the verb: the dispatcher's flags and the client's --remote.
GLOBAL_FLAGS = "--quiet -q --trace --format -a --app --remote --help -h --version"
# The options before the verb that take a value, and what that value is.
GLOBAL_VALUES = {"-a": "APP", "--app": "APP", "--format": "text|json|shell"}
# The placeholders of usage lines that name an app or a service.
KINDS = {"APP": "app", **dict.fromkeys(SERVICE_WORDS, "service")}


def completion(ctx: Context, args: list[str]) -> int:
    usage = usage_line("completion")
    if args[:1] == ["--words"]:
        typed = args[2:] if args[1:2] == ["--"] else args[1:]
        for word in words(ctx, typed):
            ctx.out(word)
        return 0
    opts = parse(args, usage, flags={"--words": "words"}, max_args=1)
    if opts.flag("words") or not opts.positional:
        raise UsageError(f"give a shell ({' or '.join(SHELLS)}) or --words; usage: {usage}")
    shell = opts.positional[0]
    if shell not in SHELLS:
        raise UsageError(f"no completion for {shell!r}: use {' or '.join(SHELLS)}")
    verbs = " ".join(verb for verb, builtin in BUILTINS.items() if not builtin.hidden)
    script = (TEMPLATES / f"completion.{shell}").read_text()
    ctx.request.stdout.write(
        script.replace("@VERBS@", verbs).replace("@FLAGS@", GLOBAL_FLAGS).encode()
    )
    return 0


def words(ctx: Context, typed: list[str]) -> list[str]:
    """What may follow ``typed`` (the words before the one being completed)."""
    index = 0
    while index < len(typed) and typed[index].startswith("-"):
        if typed[index] in GLOBAL_VALUES and index + 1 == len(typed):
            return _values(ctx, GLOBAL_VALUES[typed[index]], "")
        index += 2 if typed[index] in GLOBAL_VALUES else 1
    if index == len(typed):
        return verbs(ctx)
    return arguments(ctx, typed[index], typed[index + 1 :])


def verbs(ctx: Context) -> list[str]:
    """The built-in verbs the caller may run, then every installed plugin's commands
    under its name and its alias (``postgres:export``, ``pg:export``)."""
    from gokku.plugins import registry

    identity = ctx.request.identity
    found = [
        verb
        for verb, builtin in BUILTINS.items()
        if not builtin.hidden and access.verb_allowed(identity, builtin.access)
    ]
    for plugin in registry.installed(ctx.root):
        if plugin.disabled:
            continue
        for namespace in filter(None, (plugin.name, plugin.namespace)):
            found += [f"{namespace}:{command}" for command in plugin_commands(plugin)]
    return found


def arguments(ctx: Context, verb: str, args: list[str]) -> list[str]:
    """What comes after ``VERB ARGS``, from the verb's usage line: nothing for a verb the
    caller may not run or one whose usage says nothing there."""
    found = _usage(ctx, verb)
    if found is None:
        return []
    line, plugin = found
    positionals, options = _shape(line)
    if args and args[-1] in ("-a", "--app"):
        return _values(ctx, "APP", plugin)
    if args and args[-1] in options:
        return _values(ctx, options[args[-1]], plugin)
    count = 0
    skip = False
    for word in args:
        if skip:
            skip = False
        elif word in options:
            skip = True
        elif not word.startswith("-"):
            count += 1
    if count < len(positionals):
        return _values(ctx, positionals[count], plugin)
    if positionals and positionals[-1].endswith("..."):
        return _values(ctx, positionals[-1], plugin)
    return []


def _usage(ctx: Context, verb: str) -> tuple[str, str] | None:
    """``verb``'s usage after the verb, and its plugin's name for a plugin command."""
    from gokku.plugins import registry

    builtin = BUILTINS.get(verb)
    identity = ctx.request.identity
    if builtin is not None:
        allowed = not builtin.hidden and access.verb_allowed(identity, builtin.access)
        return (builtin.usage.partition(" ")[2], "") if allowed else None
    namespace, _, command = verb.partition(":")
    plugin = registry.find(ctx.root, namespace)
    if plugin is None:
        return None
    form = PLUGIN_FORMS.get(command)
    if form is not None and plugin.script(command) is None:
        allowed = access.verb_allowed(identity, form.access)
        return (form.usage.partition(" ")[2], plugin.name) if allowed else None
    declared = plugin.usage(command)
    return (declared[0], plugin.name) if declared else None


def _shape(line: str) -> tuple[list[str], dict[str, str]]:
    """A usage line's positional placeholders, in order, and its options that take a
    value: ``SVC -a APP [--alias NAME]`` is ``[SVC]`` and ``{-a: APP, --alias: NAME}``;
    ``[-a] APP KEY=VALUE...`` is ``[APP, KEY=VALUE...]`` (``-a`` alone is a flag)."""
    positionals: list[str] = []
    options: dict[str, str] = {}
    tokens = re.findall(r"\[[^\]]*\]|\S+", line)
    index = 0
    while index < len(tokens):
        token = tokens[index]
        index += 1
        if token in ("<", ">"):
            break
        group = token.strip("[]").split() if token.startswith("[") else [token]
        if not group:
            continue
        first = group[0]
        if first.startswith("-"):
            value = group[1] if len(group) > 1 else None
            if value is None and not token.startswith("[") and index < len(tokens):
                value, index = tokens[index], index + 1
            if value is not None:
                options[first] = value
            continue
        positionals.append(first)
    return positionals, options


def _values(ctx: Context, placeholder: str, plugin: str) -> list[str]:
    """The words a placeholder stands for: the apps or services the caller may see,
    the alternatives of ``branch|wait``; nothing for free text (``KEY=VALUE``)."""
    from gokku.suggest import visible_names

    choices = [c for c in placeholder.split("|") if c and not c.startswith("-")]
    found: list[str] = []
    for choice in choices:
        name = choice.split("[")[0].removesuffix("...")
        kind = KINDS.get(name)
        if kind is not None:
            found += visible_names(ctx.root, ctx.request.identity, kind, plugin)
        elif re.fullmatch(r"[a-z][a-z-]*", name):
            found.append(name)
    return found
