"""``completion bash|zsh``: a shell completion script; ``completion --words``: the
commands it completes, asked for at each completion.

The script is built from the command table (the visible built-in verbs and the global
flags), so it needs no update when a plugin comes or goes: the plugins' commands come from
``completion --words`` at completion time, on the server when ``gokku`` is a client, and
for the caller's key there (verbs it may not run are left out).
"""

from pathlib import Path

from gokku import access
from gokku.cmdline import parse
from gokku.commands import BUILTINS, plugin_commands, usage_line
from gokku.context import Context
from gokku.errors import UsageError

TEMPLATES = Path(__file__).resolve().parent.parent / "data"
SHELLS = ("bash", "zsh")
# Before the verb: the dispatcher's flags and the client's --remote.
GLOBAL_FLAGS = "--quiet -q --trace --format -a --app --remote --help -h --version"


def completion(ctx: Context, args: list[str]) -> int:
    usage = usage_line("completion")
    opts = parse(args, usage, flags={"--words": "words"}, max_args=1)
    if opts.flag("words") == bool(opts.positional):
        raise UsageError(f"give a shell ({' or '.join(SHELLS)}) or --words; usage: {usage}")
    if opts.flag("words"):
        for word in words(ctx):
            ctx.out(word)
        return 0
    shell = opts.positional[0]
    if shell not in SHELLS:
        raise UsageError(f"no completion for {shell!r}: use {' or '.join(SHELLS)}")
    verbs = " ".join(verb for verb, builtin in BUILTINS.items() if not builtin.hidden)
    script = (TEMPLATES / f"completion.{shell}").read_text()
    ctx.request.stdout.write(
        script.replace("@VERBS@", verbs).replace("@FLAGS@", GLOBAL_FLAGS).encode()
    )
    return 0


def words(ctx: Context) -> list[str]:
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
