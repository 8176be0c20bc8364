"""Help where Dokku users look for it: ``help TOPIC``, ``NAMESPACE:help``, ``CMD --help``
(usage, exit 0, nothing done), plugin commands given ``--help`` unchanged, and hints only
when they are plausible: within the namespace typed, never from another one."""

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door

from gokku.commands import BUILTINS, NAMESPACES, PLUGIN_FORMS, namespace_verbs

VISIBLE = [verb for verb, builtin in BUILTINS.items() if not builtin.hidden]


@pytest.fixture
def bundled(gokku: Gokku) -> None:
    """The plugins whose commands the old hints came from (apps:info -> pg:info)."""
    gokku.ok("plugins:add", "postgres")
    gokku.ok("plugins:add", "redis")


@pytest.fixture
def estate(gokku: Gokku, tmp_path) -> None:
    """An app with a variable and a service, for the commands that would change them."""
    tree = write_plugin(
        tmp_path / "src" / "echo", commands={"commands/args": "printf '[%s]' \"$@\"\n"}
    )
    gokku.ok("plugins:add", str(tree))
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "api", "K=v")
    gokku.ok("services:create", "echo", "--name", "db")


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_every_builtin_namespace_has_its_help_three_ways(gokku: Gokku, namespace: str) -> None:
    page = gokku.ok("help", namespace).stdout
    assert gokku.ok(f"{namespace}:help").stdout == gokku.ok(namespace).stdout == page
    assert page.startswith(f"=====> {namespace} commands\n")
    for verb in namespace_verbs(namespace):
        assert f"  {BUILTINS[verb].usage}  " in page
    assert "config-get" not in page and "next-port" not in page


def test_help_config_lists_the_config_verbs_with_their_usage(gokku: Gokku) -> None:
    lines = gokku.ok("help", "config").stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == [
        "config:set",
        "config:get",
        "config:list",
        "config:show",
        "config:export",
        "config:import",
        "config:unset",
    ]
    assert "config:set [-a] APP KEY=VALUE...|--stdin [--encoded] [--env ENV]" in lines[1]
    assert "config:import [-a] APP [--env ENV] < .env" in lines[6]


def test_services_help_shows_dokkus_forms(gokku: Gokku) -> None:
    page = gokku.ok("services:help").stdout
    for form in PLUGIN_FORMS.values():
        assert f"  {form.usage}  " in page


def test_help_on_a_plugin_is_its_own_help(gokku: Gokku, bundled: None) -> None:
    page = gokku.ok("pg:help").stdout
    assert gokku.ok("help", "postgres").stdout == gokku.ok("help", "pg").stdout == page
    assert "gokku redis:export SERVICE > FILE.rdb" in gokku.ok("help", "redis").stdout


@pytest.mark.parametrize("verb", VISIBLE)
def test_every_builtin_prints_its_usage_for_help_and_does_nothing(
    gokku: Gokku, estate: None, verb: str
) -> None:
    """With arguments that would otherwise act (destroy api, set K): only the usage."""
    before = gokku.snapshot()
    page = f"Usage: gokku {BUILTINS[verb].usage}\n\n{BUILTINS[verb].summary}\n"
    assert gokku.ok("help", verb).stdout == page
    for flag in ("--help", "-h"):
        result = gokku.ok(verb, "api", "db", "K=w", "--force", flag)
        assert (result.stdout, result.stderr) == (page, "")
    assert gokku.snapshot() == before


def test_dokku_forms_print_their_usage_as_typed(gokku: Gokku, bundled: None) -> None:
    result = gokku.ok("pg:create", "db", "--help")
    assert result.stdout.startswith("Usage: gokku pg:create SVC [VERSION]\n")
    assert not (gokku.root / "services" / "db").exists()
    assert gokku.ok("redis:link", "-h").stdout.startswith(
        "Usage: gokku redis:link SVC APP [--alias NAME] [--env ENV]\n"
    )


def test_plugin_commands_get_help_flags_unchanged(gokku: Gokku, estate: None) -> None:
    assert gokku.ok("echo:args", "--help", "-h").stdout == "[--help][-h]"


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["help", "nope"], 2, "no help on 'nope' (see: gokku help)"),
        (["help", "confg"], 2, "no help on 'confg'; did you mean 'config'? (see: gokku help)"),
        (["help", "config", "set"], 2, "unexpected argument 'set'; usage: gokku help [TOPIC]"),
        (["config:help", "set"], 2, "unexpected argument 'set'; usage: gokku config:help"),
        (
            ["config:lst"],
            127,
            "unknown command 'config:lst'; did you mean 'config:list'? (see: gokku help config)",
        ),
        (["apps:info"], 127, "unknown command 'apps:info' (see: gokku help apps)"),
        (["report"], 127, "unknown command 'report' (see: gokku help)"),
        (["services:lnk"], 127, "did you mean 'services:link'? (see: gokku help services)"),
        (["pg:craete"], 127, "has no command 'craete'; did you mean 'pg:create'?"),
        (["postgress:export"], 127, "did you mean 'postgres:export'? (see: gokku help)"),
        (["confg:set"], 127, "did you mean 'config:set'? (see: gokku help)"),
        (["verison"], 127, "unknown command 'verison'; did you mean 'version'?"),
    ],
)
def test_bad_topics_and_hints(
    gokku: Gokku, bundled: None, args: list[str], code: int, said: str
) -> None:
    before = gokku.snapshot()
    result = gokku(*args)
    assert result.code == code
    assert result.stderr.startswith(" !     ") and result.stderr.count("\n") == 1
    assert said in result.stderr
    assert result.stdout == ""
    assert gokku.snapshot() == before


def test_help_over_ssh(door: Door, gokku: Gokku) -> None:
    gokku.ok("plugins:add", "postgres")
    usage = door.ssh("config:set --help")
    assert (usage.code, usage.stderr) == (0, "")
    assert usage.stdout.startswith("Usage: gokku config:set [-a] APP KEY=VALUE...")
    assert door.ssh("help config").stdout == door.ssh("config:help").stdout
    assert door.ssh("services:help").stdout.startswith("=====> services commands\n")
    assert door.ssh("t:args --help -h").stdout == "[--help]\n[-h]\n"
    for command, said in (
        ("apps:info", "unknown command 'apps:info' (see: gokku help apps)"),
        ("report", "unknown command 'report' (see: gokku help)"),
    ):
        result = door.ssh(command)
        assert (result.code, result.stderr) == (127, f" !     {said}\n")
