"""Validation of the names users give to apps, services, plugins and variables.

Names become path components, so they are checked before any path is built from them.
Every check matches the whole string: with ``re.match`` and ``$``, ``'api\\n'`` would
pass (``$`` also matches before a trailing newline) and make a second app, or a ``.env``
line nobody can change. The Bash helpers get the same pattern (``helpers_text``).
"""

import os
import re

from gokku.errors import UsageError

NAME_PATTERN = "[a-z0-9][a-z0-9-]{0,62}"
ENV_KEY_PATTERN = "[A-Za-z_][A-Za-z0-9_]*"
ALIAS_PATTERN = "[A-Z][A-Z0-9_]*"
_NAME = re.compile(NAME_PATTERN)
_ENV_KEY = re.compile(ENV_KEY_PATTERN)
_ALIAS = re.compile(ALIAS_PATTERN)


def is_name(text: str) -> bool:
    """Whether ``text`` is a valid app/service/plugin/env/key name, all of it."""
    return _NAME.fullmatch(text) is not None


def check_name(kind: str, name: str) -> str:
    """Return ``name`` when it is a valid app/service/plugin/env name, else raise."""
    if not is_name(name):
        raise UsageError(
            f"invalid {kind} name {_shown(name)}: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )
    return name


def app_of(remote_path: str) -> str:
    """The app a git remote's path names. git sends ``api`` for ``gokku@host:api`` and
    ``/api`` for ``ssh://gokku@host/api``; ``.git`` and a trailing ``/`` are optional.
    Here, not in ``repos``, because the workstation's client reads it too, cheaply."""
    name = remote_path.strip("/").removesuffix(".git")
    return check_name("app", name)


def check_env_key(key: str) -> str:
    """Return ``key`` when it can be a shell variable name, else raise."""
    if _ENV_KEY.fullmatch(key) is None:
        raise UsageError(
            f"invalid variable name {_shown(key)}: use letters, digits and '_', "
            "not starting with a digit"
        )
    return key


def is_alias(text: str) -> bool:
    """Whether ``text`` can prefix a link's variables (``REPORTS`` of ``REPORTS_URL``):
    an uppercase variable name, without the ``_URL`` that the alias gives the URL."""
    return _ALIAS.fullmatch(text) is not None and not text.endswith("_URL")


def check_alias(alias: str) -> str:
    """Return ``alias`` when ``is_alias``, else raise."""
    if not is_alias(alias):
        raise UsageError(
            f"invalid alias {_shown(alias)}: use uppercase letters, digits and '_', starting "
            "with a letter, without _URL (--alias REPORTS writes REPORTS_URL)"
        )
    return alias


def _shown(text: str) -> str:
    """A rejected name as the error shows it: quoted, and cut short (100 KB stay home)."""
    return repr(text[:64]) + ("..." if len(text) > 64 else "")


def new_id() -> str:
    """16 random hex digits: an app's or service's incarnation, a command's audit id.
    (``secrets.token_hex(8)``, without the imports that cost every start a few ms.)"""
    return os.urandom(8).hex()
