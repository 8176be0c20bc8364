"""Help where Dokku users look for it: ``help TOPIC``, ``NAMESPACE:help``, ``CMD --help``
(usage, exit 0, nothing done), for plugin commands too (their ``plugin.yml``, else the
lines of their help naming them); ``help`` over SSH lists what the key may run; and hints
only when they are plausible (within the namespace typed, close on every word), or what
Gokku offers where Dokku has a command it lacks."""

import dataclasses
import re
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, make_key
from test_client import state, workstation_for

from gokku.commands import BUILTINS, NAMESPACES, PLUGIN_FORMS, namespace_verbs
from gokku.commands.help import USAGE_COLUMN

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
    listed = rows(page)
    for verb in namespace_verbs(namespace):
        assert listed[BUILTINS[verb].usage] == BUILTINS[verb].summary
    assert "config-get" not in page and "next-port" not in page


def test_help_config_lists_the_config_verbs_with_their_usage(gokku: Gokku) -> None:
    usages = list(rows(gokku.ok("help", "config").stdout))
    assert [usage.split()[0] for usage in usages] == [
        "config:set",
        "config:get",
        "config:list",
        "config:show",
        "config:export",
        "config:import",
        "config:unset",
    ]
    assert usages[0] == "config:set [-a] APP KEY=VALUE...|--stdin [--encoded] [--env ENV]"
    assert usages[5] == "config:import [-a] APP [--env ENV] < .env"


def test_services_help_shows_dokkus_forms(gokku: Gokku) -> None:
    listed = rows(gokku.ok("services:help").stdout)
    for form in PLUGIN_FORMS.values():
        assert listed[form.usage] == form.summary


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


def test_after_a_double_dash_help_flags_are_the_scripts(gokku: Gokku, estate: None) -> None:
    assert gokku.ok("echo:args", "--", "--help", "-h").stdout == "[--][--help][-h]"


EXPORT_PAGE = (
    "Usage: gokku {ns}:export SERVICE > FILE.dump\n\n"
    "Custom-format dump (pg_dump -Fc) on stdout; progress on stderr\n"
)


@pytest.mark.parametrize(
    ("command", "first_line"),
    [
        ("export", "Usage: gokku {ns}:export SERVICE > FILE.dump\n"),
        ("connect", "Usage: gokku {ns}:connect SERVICE [--superuser] [PSQL-ARGS...]\n"),
        ("info", "Usage: gokku {ns}:info SERVICE [--dsn|--FIELD]\n"),
    ],
)
def test_a_bundled_plugin_command_prints_its_usage(
    gokku: Gokku, bundled: None, command: str, first_line: str
) -> None:
    """Where it said "invalid service name '--help'" (exit 2): its plugin.yml's usage and
    summary, under the name typed, the four ways a Dokku user asks."""
    before = gokku.snapshot()
    for ns in ("postgres", "pg"):
        verb = f"{ns}:{command}"
        page = gokku.ok("help", verb).stdout
        assert page.startswith(first_line.format(ns=ns))
        for args in ([verb, "--help"], [verb, "-h"], [verb, "db", "--help"]):
            result = gokku(*args)
            assert (result.code, result.stdout, result.stderr) == (0, page, "")
    assert gokku.ok("help", "pg:export").stdout == EXPORT_PAGE.format(ns="pg")
    assert gokku.snapshot() == before


def test_without_a_declared_usage_the_lines_of_its_help_name_it(
    gokku: Gokku, tmp_path: Path
) -> None:
    ran = tmp_path / "ran"
    page = (
        'echo "=====> demo commands"\n'
        'echo "  gokku $GOKKU_PLUGIN_NAME:frob SVC        Frob a service"\n'
        'echo "  gokku $GOKKU_PLUGIN_NAME:frobnicate SVC  Something else"\n'
        'echo "  gokku dm:start|stop SVC  Control it"\n'
        'help_rows "gokku dm:frobulate SVC --with-a-long-option VALUE [--and-more]" "At length" '
        '"gokku dm:x" "X"\n'
    )
    scripts = {"commands/help": page}
    commands = ("frob", "stop", "plain", "frobulate")
    scripts |= {f"commands/{name}": f"touch {ran}\n" for name in commands}
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "demo", namespace="dm", commands=scripts)))
    assert gokku.ok("demo:frob", "--help").stdout == "gokku demo:frob SVC        Frob a service\n"
    assert gokku.ok("help", "dm:stop").stdout == "gokku dm:start|stop SVC  Control it\n"
    assert gokku.ok("dm:frobulate", "--help").stdout == (  # a usage too wide for help_rows
        "gokku dm:frobulate SVC --with-a-long-option VALUE [--and-more]\nAt length\n"
    )
    assert gokku.ok("dm:plain", "-h").stdout == (
        "dm:plain: its plugin's help does not name it (see: gokku dm:help)\n"
    )
    assert not ran.exists()  # nothing ran but the help script
    result = gokku("dm:nope", "--help")
    assert result.code == 127 and "plugin 'demo' has no command 'nope'" in result.stderr


def test_help_postgres_lists_dokkus_forms_in_columns(gokku: Gokku, bundled: None) -> None:
    page = gokku.ok("help", "postgres").stdout
    for form in ("create SERVICE [VERSION]", "link SERVICE APP", "unlink", "promote", "list"):
        assert f"  gokku postgres:{form}" in page
    assert "gokku postgres:export SERVICE > FILE.dump" in page
    assert_columns(page)
    assert_columns(gokku.ok("help", "redis").stdout)


def assert_columns(page: str) -> None:
    """A page of command rows, in columns (``rows``)."""
    assert len(rows(page)) > 5, page


def rows(page: str) -> dict[str, str]:
    """A help page's command rows, usage to summary: ``  USAGE  SUMMARY``, or a usage
    wider than USAGE_COLUMN on a line of its own and its summary on the next. Every
    summary of a section (``=====>``) starts in the same column, which no usage wider
    than that sets (one long usage would push every summary past a terminal's width)."""
    found: dict[str, str] = {}
    starts: set[tuple[int, int]] = set()
    lines = page.splitlines()
    section = 0
    for line, after in zip(lines, [*lines[1:], ""], strict=True):
        section += line.startswith("=====>")
        row = re.fullmatch(r"  (\S.*?)  +(\S.*)", line)
        alone = re.fullmatch(r"  (\S+(?: \S+)*)", line)
        if row:
            assert len(row[1]) <= USAGE_COLUMN, line
            found[row[1]], start = row[2], row.start(2)
        elif alone and after.startswith("   "):
            assert len(alone[1]) > USAGE_COLUMN, line
            found[alone[1]], start = after.strip(), len(after) - len(after.lstrip())
        else:
            continue
        starts.add((section, start))
    columns = dict(starts)
    assert len(columns) == len(starts) and max(columns.values()) <= USAGE_COLUMN + 4, page
    return found


def test_help_lists_the_builtins_in_columns_a_terminal_shows(gokku: Gokku) -> None:
    """Long usages (plugins:publish ...) on lines of their own: the summaries' column is
    no wider than USAGE_COLUMN allows."""
    page = gokku.ok("help").stdout
    builtins = page.partition("=====> Built-in commands\n")[2].partition("=====> Plugins")[0]
    assert rows(builtins) == {BUILTINS[verb].usage: BUILTINS[verb].summary for verb in VISIBLE}


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (["help", "nope"], 2, "no help on 'nope' (see: gokku help)"),
        (["help", "confg"], 2, "no help on 'confg'; did you mean 'config'? (see: gokku help)"),
        (["help", "ps"], 2, "no help on 'ps': Gokku runs no app processes"),
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
        (["config:sett"], 127, "did you mean 'config:set'? (see: gokku help config)"),
        (["postgres:exprot"], 127, "has no command 'exprot'; did you mean 'postgres:export'?"),
        (["serivces:list"], 127, "did you mean 'services:list'? (see: gokku help)"),
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
    assert door.ssh("t:args -- --help -h").stdout == "[--]\n[--help]\n[-h]\n"
    export = door.ssh("postgres:export --help")
    assert (export.code, export.stdout, export.stderr) == (
        0,
        EXPORT_PAGE.format(ns="postgres"),
        "",
    )
    for command, said in (
        ("apps:info", "unknown command 'apps:info' (see: gokku help apps)"),
        ("report", "unknown command 'report' (see: gokku help)"),
    ):
        result = door.ssh(command)
        assert (result.code, result.stderr) == (127, f" !     {said}\n")


@pytest.mark.parametrize(
    ("verb", "offered"),
    [
        ("ps:restart", "Gokku runs no app processes: a deploy plugin (hooks/deploy)"),
        ("ps:rebuild", "to deploy again: apps:deploy APP"),
        ("domains:add", "Gokku serves no HTTP"),
        ("proxy:report", "Gokku serves no HTTP"),
        ("letsencrypt:enable", "Gokku serves no HTTP: your deploy plugin or a web server"),
        ("certs:add", "(certificates)"),
        ("logs", "a deploy's output: apps:deploy-log APP; a service's log: services:logs SVC"),
        ("run", "a service's shell: PLUGIN:connect SVC"),
        ("plugin:install", "plugins are plugins:add SOURCE, plugins:list"),
        ("apps:report", "an app at a glance: apps:list, apps:deploys APP, config:show APP"),
        ("git:sync", "push with git (git push gokku@HOST:APP BRANCH)"),
    ],
)
def test_dokkus_namespaces_say_what_gokku_offers(
    gokku: Gokku, bundled: None, verb: str, offered: str
) -> None:
    before = gokku.snapshot()
    result = gokku(verb, "api")
    assert (result.code, result.stdout) == (127, "")
    assert result.stderr.startswith(f" !     unknown command {verb!r}: ")
    assert offered in result.stderr and result.stderr.count("\n") == 1
    assert "did you mean" not in result.stderr
    assert gokku.snapshot() == before


@pytest.mark.parametrize(
    "verb",
    ["pg:impose", "postgres:expire", "apps:rename", "apps:info", "cron:list", "registry:login"],
)
def test_no_hint_rather_than_a_misleading_one(gokku: Gokku, bundled: None, verb: str) -> None:
    """pg:impose -> pg:expose, pg:expire -> pg:export, apps:rename -> apps:create,
    cron:list -> config:list: close letters, other deeds."""
    result = gokku(verb, "db")
    assert result.code == 127 and result.stderr.count("\n") == 1
    assert "did you mean" not in result.stderr


@pytest.fixture
def bob(gokku: Gokku, keydir: Path) -> KeyPair:
    key = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=key.public.encode())
    return key


def test_help_over_ssh_lists_what_the_key_may_run(door: Door, gokku: Gokku, bob: KeyPair) -> None:
    gokku.ok("plugins:add", "postgres")
    local, admin = gokku.ok("help").stdout, door.ssh("help").stdout
    member = door.ssh("help", key=bob.path).stdout
    assert "  serve " in local and "  serve " not in admin  # not over SSH, whoever asks
    for verb in ("plugins:add", "ssh-keys:add", "access:grant", "apps:create", "doctor"):
        assert f"  {verb} " in admin and f"  {verb} " not in member
    assert "  config:set " in member and "  whoami " in member and "postgres (pg)" in member
    assert "(none your key may run: ask an admin)" in door.ssh("help ssh-keys", key=bob.path).stdout
    services = door.ssh("help services", key=bob.path).stdout
    assert "PLUGIN:link SVC APP" in services and "PLUGIN:create" not in services
    # The plugin's page: no rows an admin alone may run, still in columns.
    page = door.ssh("help postgres", key=bob.path).stdout
    assert "postgres:link SERVICE APP" in page and "postgres:create" not in page
    assert "postgres:destroy" not in page and "postgres:destroy" in door.ssh("help pg").stdout
    assert_columns(page)
    # Asking for the usage of what the key may not run is refused as running it is.
    for command in ("help apps:create", "apps:create --help", "pg:destroy --help"):
        refused = door.ssh(command, key=bob.path)
        assert refused.code == 1 and "(admins only)" in refused.stderr, command
    assert door.ssh("help pg:export", key=bob.path).stdout == EXPORT_PAGE.format(ns="pg")
    serve = door.ssh("help serve")
    assert serve.code == 1 and "serve is not available over SSH" in serve.stderr


def test_a_plugin_commands_unknown_service_gets_a_hint_from_what_the_key_may_see(
    door: Door, gokku: Gokku, bob: KeyPair, tmp_path: Path
) -> None:
    """Its usage (plugin.yml) says the first word is a service: Gokku checks it before
    the script runs, and hints only at names the caller could list."""
    kv = write_plugin(tmp_path / "src" / "kv")
    (kv / "plugin.yml").write_text("commands:\n  info: {usage: SERVICE}\n")
    gokku.ok("plugins:add", str(kv))
    gokku.ok("apps:create", "api")
    for service in ("uxdb", "secret"):
        gokku.ok("services:create", "kv", "--name", service)
    result = gokku("kv:info", "uxbd")
    assert (result.code, result.stdout) == (1, "")
    assert result.stderr == (
        " !     service 'uxbd' does not exist (see: gokku services:list); did you mean 'uxdb'?\n"
    )
    assert "did you mean 'api'?" in gokku("kv:link", "uxdb", "apii").stderr
    assert "did you mean" not in door.ssh("kv:info uxbd", key=bob.path).stderr
    gokku.ok("access:grant", "bob", "service:uxdb", "--read")
    assert "did you mean 'uxdb'?" in door.ssh("kv:info uxbd", key=bob.path).stderr
    assert "did you mean" not in door.ssh("kv:info secrte", key=bob.path).stderr
    assert door.ssh("kv:info uxdb", key=bob.path).stdout == "info uxdb\n"


def test_a_services_hint_comes_from_the_plugins_own_services(
    door: Door, gokku: Gokku, tmp_path: Path, base_env: dict[str, str]
) -> None:
    """Through the client: ``kv:info cc`` hints at none of another plugin's services
    (``c`` is ot's), ``ot:info cc`` at its own."""
    for name in ("kv", "ot"):
        tree = write_plugin(tmp_path / "src" / name)
        (tree / "plugin.yml").write_text("commands:\n  info: {usage: SERVICE}\n")
        gokku.ok("plugins:add", str(tree))
    gokku.ok("apps:create", "api")
    gokku.ok("services:create", "kv", "--name", "uxdb")
    gokku.ok("services:create", "ot", "--name", "c")
    client = workstation_for(door, tmp_path / "workstation", base_env)
    other = client("kv:info", "cc")
    assert (other.code, other.stderr) == (
        1,
        " !     service 'cc' does not exist (see: gokku services:list)\n",
    )
    assert "did you mean 'c'?" in client("ot:info", "cc").stderr


def test_help_and_hints_through_the_client(
    door: Door, gokku: Gokku, bob: KeyPair, tmp_path: Path, base_env: dict[str, str]
) -> None:
    """What a Dokku user types at a workstation (a HOME without Gokku state): a plugin
    command's usage, help on it, help as a member, a Dokku namespace Gokku lacks, and a
    service's did-you-mean from the names the member may see (a plugin whose usage starts
    with SERVICE, as postgres:info's does: no PostgreSQL server needed)."""
    gokku.ok("plugins:add", "postgres")
    kv = write_plugin(tmp_path / "src" / "kv")  # a service like postgres's, without a server
    (kv / "plugin.yml").write_text("commands:\n  info: {usage: SERVICE}\n")
    gokku.ok("plugins:add", str(kv))
    gokku.ok("apps:create", "api")
    gokku.ok("services:create", "kv", "--name", "uxdb")
    admin = workstation_for(door, tmp_path / "admin", base_env)
    member = workstation_for(dataclasses.replace(door, key=bob), tmp_path / "member", base_env)
    gokku.ok("access:grant", "bob", "app:api", "--read")
    before = state(gokku)

    page = EXPORT_PAGE.format(ns="postgres")
    for argv in (["postgres:export", "--help"], ["postgres:export", "-h"]):
        shown = admin(*argv)
        assert (shown.code, shown.stdout, shown.stderr) == (0, page, ""), argv
    assert admin("help", "postgres:export").stdout == page

    listed = member("help")
    assert listed.code == 0, listed.stderr
    assert "  config:set " in listed.stdout and "postgres (pg)" in listed.stdout
    for verb in ("serve", "plugins:add", "ssh-keys:add", "apps:create"):
        assert f"  {verb} " not in listed.stdout, verb

    dokku = admin("ps:restart")
    assert (dokku.code, dokku.stdout) == (127, "")
    assert dokku.stderr == (
        " !     unknown command 'ps:restart': Gokku runs no app processes: a deploy plugin "
        "(hooks/deploy) builds and runs apps; to deploy again: apps:deploy APP "
        "(see: gokku help apps)\n"
    )

    hidden = member("kv:info", "uxbd")
    assert hidden.code == 1 and "did you mean" not in hidden.stderr, hidden.stderr
    assert state(gokku) == before
    gokku.ok("access:grant", "bob", "service:uxdb", "--read")
    before = state(gokku)
    hinted = member("kv:info", "uxbd")
    assert (hinted.code, hinted.stderr) == (
        1,
        " !     bob may not read service 'uxbd': ask an admin for access:grant bob "
        "service:uxbd --read; did you mean 'uxdb'?\n",
    )
    assert state(gokku) == before
