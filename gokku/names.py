"""Validation of the names users give to apps, services, plugins and variables.

Names become path components, so they are checked before any path is built from them.
"""

import re

from gokku.errors import UsageError

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
ENV_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_name(kind: str, name: str) -> str:
    """Return ``name`` when it is a valid app/service/plugin/env name, else raise."""
    if not NAME_RE.match(name):
        raise UsageError(
            f"invalid {kind} name {name!r}: use 1-63 lowercase letters, digits and '-', "
            "starting with a letter or digit"
        )
    return name


def check_env_key(key: str) -> str:
    """Return ``key`` when it can be a shell variable name, else raise."""
    if not ENV_KEY_RE.match(key):
        raise UsageError(
            f"invalid variable name {key!r}: use letters, digits and '_', not starting with a digit"
        )
    return key
