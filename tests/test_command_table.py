"""The command table names each built-in's function by module and name, so that the CLI
imports only what a verb needs. A function renamed without its row must fail here, not
in front of a user."""

import importlib
import inspect

import pytest

from gokku.access import ADMIN, ANY, GRANTED, LOCAL
from gokku.commands import BUILTINS


@pytest.mark.parametrize("verb", sorted(BUILTINS))
def test_every_verb_names_a_function_that_exists(verb: str) -> None:
    builtin = BUILTINS[verb]
    function = getattr(importlib.import_module(builtin.module), builtin.function, None)
    assert callable(function), f"{verb}: {builtin.module}.{builtin.function} is missing"
    assert list(inspect.signature(function).parameters) == ["ctx", "args"], verb
    assert builtin.access in (ANY, ADMIN, GRANTED, LOCAL), verb
    assert builtin.usage.startswith(verb), verb
