"""Did-you-mean hints, and what Gokku offers where a Dokku user types a Dokku command.

A hint is only worth giving when it is plausible: a wrong one (``ps:restart`` -> "did you
mean apps:create?") sends the user somewhere else with confidence. Each word of a verb is
compared on its own (the namespace, then the command), with ``difflib``'s ratio: compared
whole, a verb passes on its namespace alone (``pg:expose`` 0.78 to ``pg:export``).
Measured: real typos score 0.75 and up on every word (``config:sett`` 0.86,
``postgres:exprot`` 0.83, ``serivces`` 0.88, ``verison`` 0.86, ``pg:inof`` 0.75), the
misleading ones 0.67 and below on a word (``ps``/``apps`` 0.67, ``expose``/``export``
0.67, ``restart``/``create`` 0.46). Names are the user's own and often short: one wrong
letter of three (``apu`` for ``api``) is 0.67, and still the name meant.
"""

import difflib
from typing import TYPE_CHECKING

from gokku import access
from gokku.commands import BUILTINS, NAMESPACES, namespace_verbs, plugin_commands

if TYPE_CHECKING:
    from gokku.context import Context, Identity
    from gokku.paths import Root

WORD_CUTOFF = 0.75  # each word of a verb (namespace, command) on its own
NAME_CUTOFF = 0.6  # an app or a service

# What a Dokku user reaches for and Gokku does differently: by namespace, or by whole verb
# where only that one command differs. One line each, naming what to run instead.
_NO_PROCESSES = "Gokku runs no app processes: a deploy plugin (hooks/deploy) builds and runs apps"
_NO_HTTP = "Gokku serves no HTTP: your deploy plugin or a web server in front of the app does"
DOKKU: dict[str, str] = {
    "ps": f"{_NO_PROCESSES}; to deploy again: apps:deploy APP (see: gokku help apps)",
    "run": f"{_NO_PROCESSES}; a service's shell: PLUGIN:connect SVC",
    "enter": f"{_NO_PROCESSES}; a service's shell: PLUGIN:connect SVC",
    "logs": f"{_NO_PROCESSES}; a deploy's output: apps:deploy-log APP; "
    "a service's log: services:logs SVC",
    "builder": f"{_NO_PROCESSES} (see: gokku help apps)",
    "buildpacks": f"{_NO_PROCESSES} (see: gokku help apps)",
    "domains": f"{_NO_HTTP} (domains)",
    "proxy": f"{_NO_HTTP} (the proxy)",
    "nginx": f"{_NO_HTTP} (the proxy)",
    "ports": f"{_NO_HTTP} (the ports)",
    "certs": f"{_NO_HTTP} (certificates)",
    "letsencrypt": f"{_NO_HTTP} (certificates)",
    "git": "push with git (git push gokku@HOST:APP BRANCH); deploy again: apps:deploy APP [REV]",
    "plugin": "plugins are plugins:add SOURCE, plugins:list, plugins:update NAME, "
    "plugins:remove NAME (see: gokku help plugins)",
    "apps:report": "an app at a glance: apps:list, apps:deploys APP, config:show APP",
}


def closest(word: str, candidates: list[str], cutoff: float = WORD_CUTOFF) -> str | None:
    """The candidate most like ``word``, when it is like it at all."""
    match = difflib.get_close_matches(word, candidates, n=1, cutoff=cutoff)
    return match[0] if match else None


def dokku_note(verb: str) -> str | None:
    """What Gokku offers instead of a Dokku command it does not have."""
    return DOKKU.get(verb) or DOKKU.get(verb.partition(":")[0])


def hint(ctx: "Context", verb: str) -> str:
    """What follows "unknown command X" or "no help on X": what Gokku offers instead of a
    Dokku command, else a plausible did-you-mean and where to look."""
    note = dokku_note(verb)
    return f": {note}" if note else did_you_mean(ctx, verb)


def did_you_mean(ctx: "Context", verb: str) -> str:
    """``; did you mean 'X'?`` when X is plausible, and where to look.

    ``NS:CMD`` is compared with the commands of NS only (of the closest namespace when NS
    is none): a hint from another namespace (``apps:info`` -> ``pg:info``) misleads. A
    bare word is compared with the bare verbs and the namespaces.
    """
    namespace, colon, command = verb.partition(":")
    if colon:
        close, where = _close_command(ctx, namespace, command)
    else:
        bare = [v for v, b in BUILTINS.items() if ":" not in v and not b.hidden]
        close, where = closest(verb, bare + _namespaces(ctx)), "gokku help"
    hint = f"; did you mean {close!r}?" if close else ""
    return f"{hint} (see: {where})"


def plugin_command(namespace: str, command: str, commands: list[str]) -> str:
    """``; did you mean 'pg:create'?`` for a plugin command that does not exist."""
    close = closest(command, commands)
    return f"; did you mean '{namespace}:{close}'?" if close else ""


def _close_command(ctx: "Context", namespace: str, command: str) -> tuple[str | None, str]:
    """The closest ``NS:CMD`` within the namespace typed, else within the closest one;
    and the help that lists them."""
    commands = _namespace_commands(ctx, namespace)
    if commands is not None:
        where = f"gokku help {namespace}"
    else:
        namespace = closest(namespace, _namespaces(ctx)) or namespace
        commands, where = _namespace_commands(ctx, namespace) or [], "gokku help"
    match = closest(command, commands)
    return (f"{namespace}:{match}" if match else None), where


def _namespaces(ctx: "Context") -> list[str]:
    from gokku.plugins import registry

    names = list(NAMESPACES)
    for plugin in registry.installed(ctx.root):
        names += [plugin.name] + ([plugin.namespace] if plugin.namespace else [])
    return names


def _namespace_commands(ctx: "Context", namespace: str) -> list[str] | None:
    """The commands ``NAMESPACE:`` can be followed by; None for no such namespace."""
    from gokku.plugins import registry

    if namespace in NAMESPACES:
        return [verb.partition(":")[2] for verb in namespace_verbs(namespace)] + ["help"]
    plugin = registry.find(ctx.root, namespace)
    return plugin_commands(plugin) if plugin is not None else None


def visible_names(root: "Root", identity: "Identity", kind: str, plugin: str = "") -> list[str]:
    """The apps or services (of ``plugin`` when given) the caller may read: what a hint
    or a completion may name (a member learns no name it could not list)."""
    from gokku import apps, services

    if kind == "app":
        every = apps.names(root)
    else:
        every = [s.name for s in services.all_services(root) if not plugin or s.plugin == plugin]
    return access.visible(identity, kind, every)


def similar_name(root: "Root", identity: "Identity", kind: str, name: str, plugin: str = "") -> str:
    """``; did you mean 'api'?`` for an unknown app or service (of ``plugin`` when
    given: another plugin's service is not what a ``postgres:`` command meant)."""
    if kind not in access.KINDS:
        return ""
    names = [n for n in visible_names(root, identity, kind, plugin) if n != name]
    close = closest(name, names, NAME_CUTOFF)
    return f"; did you mean {close!r}?" if close else ""
