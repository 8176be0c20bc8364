"""The ``gokku`` command on a workstation: runs each command on the server a git remote
names, over the system's ``ssh``, as Dokku's client script and the original Gokku's
``--remote`` do.

The CLI is a client when (checked in this order):

1. ``--remote NAME`` (or ``--remote=NAME``) is among the global flags before the verb;
2. ``GOKKU_REMOTE=NAME`` is set;
3. no local state is in use (``GOKKU_ROOT`` unset and the default state directory
   absent) and the current directory is in a git repository with a remote named
   ``gokku``.

A server always has its state, so its own CLI never turns into a client by itself, and
sshd's forced command (``ssh-command``) is never looked at here (``gokku.cli``).

Host, user and port come from the remote's URL (``gokku@host:api``,
``ssh://gokku@host:2222/api``), the app from its path: ``-a APP`` is added when the
command takes an app and names none. Every argument is quoted with ``shlex``, which the
server undoes with the same rules, so values arrive exactly; then ``ssh`` replaces this
process, so stdin, stdout, the terminal and the exit code are ssh's, untouched.

Kept free of the server's modules: a client starts ssh and nothing else (no asyncssh);
ops/make-client carries it, with what it imports, into the one-file ops/gokku-client.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Mapping
from typing import NamedTuple
from urllib.parse import urlsplit

from gokku import shapes
from gokku.errors import UsageError

DEFAULT_REMOTE = "gokku"
SSH_SCHEMES = ("ssh", "git+ssh", "ssh+git")
# Global flags that take a value (the dispatcher's): what follows them is not the verb.
GLOBAL_VALUES = ("-a", "--app", "--format")
# ``[user@]host:path`` as git reads it: the host ends at the first colon (an IPv6
# address is bracketed), and no slash comes before that colon.
SCP_LIKE = re.compile(r"(?:([^@/]+)@)?(\[[^\]/]+\]|[^:/\[\]]+):(.*)", re.DOTALL)


class Remote(NamedTuple):
    """Where the commands run: an SSH destination, and the app the remote's path names."""

    name: str
    host: str
    user: str | None = None
    port: int | None = None
    app: str | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def main(
    argv: list[str], environ: Mapping[str, str] = os.environ, always: bool = False
) -> int | None:
    """Run ``argv`` on the remote server when the CLI is a client (never returns then,
    except with the exit code of a one-line error); None when it is not. ``always``: the
    one-file client (ops/gokku-client), a client whatever the machine has, on the remote
    ``gokku`` unless told another."""
    try:
        name, args = chosen_remote(argv, environ, always)
        if name is None:
            return None
        remote = parse_url(name, remote_url(name))
        if not args:
            raise UsageError(f"no command given; try: gokku --remote {name} help")
        interactive = os.isatty(0) and os.isatty(1)
        command = ssh_argv(remote, remote_command(remote, args), environ, interactive)
    except UsageError as exc:
        sys.stderr.write(f" !     {exc.message}\n")
        return exc.exit_code
    return _exec(command)


def chosen_remote(
    argv: list[str], environ: Mapping[str, str], always: bool = False
) -> tuple[str | None, list[str]]:
    """The git remote to run on (None: run here), and ``argv`` without ``--remote``."""
    args: list[str] = []
    name = None
    words = iter(argv)
    for word in words:
        if not word.startswith("-"):
            args.append(word)
            break
        if word == "--remote":
            name = next(words, None)
            if not name:
                raise UsageError("--remote needs the name of a git remote: --remote NAME")
        elif word.startswith("--remote="):
            name = word.partition("=")[2]
        else:
            args.append(word)
            value = next(words, None) if word in GLOBAL_VALUES else None
            if value is not None:
                args.append(value)
    args.extend(words)
    if name is not None:
        return name, args
    if environ.get("GOKKU_REMOTE"):
        return environ["GOKKU_REMOTE"], args
    if always:
        return DEFAULT_REMOTE, args
    if not environ.get("GOKKU_ROOT") and _no_local_state() and _has_remote(DEFAULT_REMOTE):
        return DEFAULT_REMOTE, args
    return None, args


def local_hint(argv: list[str], root: str) -> str | None:
    """When a command that ran here (on a server's state) failed on its arguments while
    the current directory has a remote ``gokku``: which side ran it, and how to reach the
    other, since the same words through the client would have named the remote's app."""
    if not _has_remote(DEFAULT_REMOTE):
        return None
    again = shlex.join(["gokku", "--remote", DEFAULT_REMOTE, *argv])
    return (
        f"ran on this server (GOKKU_ROOT={root}); to run it on the remote "
        f"{DEFAULT_REMOTE!r}: {again}"
    )


def _no_local_state() -> bool:
    from gokku.paths import default_root

    return not default_root().exists()


def _git_remote(name: str) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(
            ["git", "remote", "get-url", "--", name], capture_output=True, text=True
        )
    except OSError:  # no git: no repository to name a remote either
        return None


def _has_remote(name: str) -> bool:
    found = _git_remote(name)
    return found is not None and found.returncode == 0


def remote_url(name: str) -> str:
    """The URL of the git remote ``name`` of the current directory's repository."""
    found = _git_remote(name)
    if found is None or found.returncode != 0:
        raise UsageError(
            f"no git remote {name!r} here: add one with git remote add {name} gokku@HOST:APP"
        )
    return found.stdout.strip()


def parse_url(name: str, url: str) -> Remote:
    """``[user@]host:path`` or ``ssh://[user@]host[:port]/path`` as a Remote; anything
    else (an https or file URL, a local path) is refused: it names no SSH server."""
    scheme, sep, _ = url.partition("://")
    try:
        if sep:
            if scheme not in SSH_SCHEMES:
                raise ValueError
            parts = urlsplit(url)
            user, host, port, path = parts.username, parts.hostname, parts.port, parts.path
        else:
            match = SCP_LIKE.fullmatch(url)
            if match is None:
                raise ValueError
            user, host, path = match.group(1), match.group(2).strip("[]"), match.group(3)
            port = None
        if not host or host.startswith("-") or any(c.isspace() for c in host):
            raise ValueError
    except ValueError:  # urlsplit's too: a port that is not a number
        raise UsageError(
            f"git remote {name!r} ({url}) is not an SSH URL: use gokku@HOST:APP "
            "or ssh://gokku@HOST:PORT/APP"
        ) from None
    return Remote(name, host, user or None, port, _app(name, path))


def _app(name: str, path: str) -> str | None:
    from gokku.names import app_of

    if not path.strip("/"):
        return None
    try:
        return app_of(path)
    except UsageError as exc:
        raise UsageError(f"the path of git remote {name!r}: {exc.message}") from None


def remote_command(remote: Remote, args: list[str]) -> str:
    """The command string the server splits back into ``args`` (with ``-a APP`` after
    the global flags when the command takes an app and names none)."""
    index = _verb_index(args)
    flags, verb, rest = args[:index], args[index : index + 1], args[index + 1 :]
    if remote.app and verb and _lacks_app(flags, verb[0], rest):
        args = [*flags, "-a", remote.app, *verb, *rest]
    return shlex.join(args)


def _verb_index(args: list[str]) -> int:
    index = 0
    while index < len(args) and args[index].startswith("-"):
        index += 2 if args[index] in GLOBAL_VALUES else 1
    return index


def _lacks_app(flags: list[str], verb: str, args: list[str]) -> bool:
    """Whether the command takes an app and the words typed name none, read by the
    verb's usage line (``gokku.shapes``) as the server reads them. A plugin's commands
    all may take one (they read ``GOKKU_APP``; ``PLUGIN:link SVC`` links to it); the
    other built-ins take none."""
    from gokku.names import is_name

    if shapes.names_app_option(flags) or shapes.names_app_option(args):
        return False
    named = shapes.app_named(verb, args, is_name)
    if named is None:
        return verb.partition(":")[0] not in shapes.BUILTIN_NAMESPACES
    return not named


def ssh_argv(
    remote: Remote, command: str, environ: Mapping[str, str], interactive: bool
) -> list[str]:
    """``GOKKU_SSH`` (default ``ssh``; split like a shell would, never run by one), a pty
    exactly when stdin and stdout are terminals (``-T`` otherwise, whatever the ssh
    configuration says: data streams stay bytes), the port, then the destination."""
    try:
        ssh = shlex.split(environ.get("GOKKU_SSH") or "ssh")
    except ValueError as exc:
        raise UsageError(f"GOKKU_SSH: {exc}") from None
    if not ssh:
        raise UsageError("GOKKU_SSH is blank: set it to an ssh command, or unset it")
    port = ["-p", str(remote.port)] if remote.port else []
    return [*ssh, "-t" if interactive else "-T", *port, "--", remote.destination, command]


def _exec(argv: list[str]) -> int:
    """Become ssh: its streams, terminal and exit code are the caller's, untouched."""
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.stderr.write(f" !     cannot run {argv[0]}: {exc.strerror} (see GOKKU_SSH)\n")
    return 2
