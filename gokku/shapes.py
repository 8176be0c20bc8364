"""The usage lines of the built-in verbs that take an app, and what they say about the
words typed: the one source both the command table (``gokku.commands``) and the
workstation's client read.

The client adds the remote's app (``-a APP``) exactly where the server would otherwise
find none, so it must read the words as the server does: the app is ``-a APP`` (before or
after the verb) or, in Dokku's forms (``[-a] APP`` and a bare ``APP``), the first word,
when there are more words than the verb needs without it and that word can be an app's
name. Kept free of imports beyond the standard library: the one-file client carries it.
"""

from __future__ import annotations

import re
from typing import NamedTuple

APP_USAGES = {
    verb: f"{verb} {spec}"
    for verb, spec in {
        "apps:create": "[-a] APP",
        "apps:destroy": "[-a] APP [--force]",
        "apps:deploy": "[-a] APP [REV]",
        "apps:deploys": "[-a] APP [--format json]",
        "apps:deploy-log": "[-a] APP [N]",
        "apps:deploy-set": "[-a] APP branch|wait [VALUE]",
        "config:set": "[-a] APP KEY=VALUE...|--stdin [--encoded] [--env ENV]",
        "config:get": "[-a] APP KEY [--env ENV]",
        "config:list": "[-a] APP [--env ENV] [--format json|shell]",
        "config:show": "[-a] APP [--env ENV] [--format json|shell]",
        "config:export": "[-a] APP [--env ENV]",
        "config:import": "[-a] APP [--env ENV] < .env",
        "config:unset": "[-a] APP KEY... [--env ENV]",
        "services:link": "SVC -a APP [--alias NAME] [--env ENV]",
        "services:promote": "SVC -a APP [--env ENV]",
        "services:unlink": "SVC -a APP [--env ENV]",
    }.items()
}
# The namespaces of the built-in verbs (``config`` of ``config:set``, and the bare verbs):
# any other ``NS:CMD`` is a plugin's, whose commands may take an app (``GOKKU_APP``).
BUILTIN_NAMESPACES = frozenset(
    {
        "help", "version", "completion", "plugins", "services", "apps", "config",
        "git-receive-pack", "git-hook", "git-upload-pack", "ssh-keys", "access",
        "doctor", "whoami", "serve", "ssh-command", "sandbox-run", "sandbox-client",
    }
)  # fmt: skip
# Options of these verbs that take a value (``-e`` is ``--env``'s short form): the word
# after one is not a positional argument.
VALUE_OPTIONS = ("-a", "--app", "-e", "--env", "--format", "--alias")


class Shape(NamedTuple):
    """``first``: the app may be the first word (Dokku's form); ``needs``: how many
    positional words the verb needs besides the app, unless the option ``unless`` is
    given (``config:set --stdin`` reads its KEY=VALUE from stdin); ``then``: the words
    the one after the app must be, when the usage spells them (``branch|wait``);
    ``optional``: the optional words it takes after those (``[REV]``, ``[N]``)."""

    first: bool
    needs: int
    unless: str | None = None
    then: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()


def shape(verb: str) -> Shape | None:
    """What the usage line of ``verb`` says about its app; None when it takes none."""
    usage = APP_USAGES.get(verb)
    if usage is None:
        return None
    spec = usage.partition(" ")[2]
    first = spec.startswith(("APP", "[-a] APP"))
    # What is left without the optional parts, the app and stdin (``< .env``) is needed.
    words = re.sub(r"\[[^\]]*\]", "", spec.partition("<")[0]).split()
    needed = [word for word in words if word not in ("-a", "APP")]
    unless = [word.partition("|")[2] for word in needed if "|-" in word]
    then = tuple(needed[0].split("|")) if needed and needed[0].islower() else ()
    optional = tuple(
        word
        for word in re.findall(r"\[([^\]]*)\]", spec)
        if not word.startswith("-") and "..." not in word
    )
    return Shape(first, len(needed), unless[0] if unless else None, then, optional)


def positionals(args: list[str]) -> list[str]:
    """The words of ``args`` that are not options or option values."""
    words: list[str] = []
    items = iter(args)
    for word in items:
        if word == "--":
            words.extend(items)
        elif word in VALUE_OPTIONS:
            next(items, None)
        elif not (word.startswith("-") and len(word) > 1 and not word[1].isdigit()):
            words.append(word)
    return words


def names_app_option(args: list[str]) -> bool:
    """Whether ``-a``/``--app`` is among the options of ``args`` (not after ``--``)."""
    options = args[: args.index("--")] if "--" in args else args
    return any(word.partition("=")[0] in ("-a", "--app") for word in options)


def app_named(verb: str, args: list[str], is_name) -> bool | None:
    """Whether the words after ``verb`` name its app (``-a``, or Dokku's first word);
    None when the verb takes no app. ``is_name``: whether a word can be an app's name.

    Read for a client whose remote names an app: words that fit the verb without an app
    are its own, so ``apps:deploy 1a2b3c`` is a rev and ``apps:deploy-log 2`` a number of
    the remote's app (an ``N`` must be a number: ``apps:deploy-log web`` names web)."""
    found = shape(verb)
    if found is None:
        return None
    if names_app_option(args):
        return True
    words = positionals(args)
    options = args[: args.index("--")] if "--" in args else args
    needs = 0 if found.unless in options else found.needs
    if not found.first or len(words) <= needs or not is_name(words[0]):
        return False
    if found.then:
        return words[1] in found.then
    extra = words[needs:]
    if len(extra) > len(found.optional):
        return True
    numbers = [word for slot, word in enumerate(extra) if found.optional[slot] == "N"]
    return not all(word.isascii() and word.isdigit() for word in numbers)
