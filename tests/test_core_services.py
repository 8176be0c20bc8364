"""Services: create, list, info, logs, link, unlink, destroy — and every refusal."""

import json
import time

import pytest
from bundled_support import wait_gone
from conftest import write_plugin

from gokku.commands.services import STATUS_SECONDS

# The stand-in plugins start no servers and name their first ports (19400...).
pytestmark = pytest.mark.usefixtures("named_ports")

INSTALL = """
echo "installing $1 version=[$2] SERVICE_NAME=$SERVICE_NAME"
update_service_config "$1" port "$(get_next_port 19400)"
set_service_env "$1" CACHE_URL "cache://$1:$(get_service_config "$1" port)"
set_service_env "$1" CACHE_NOTE "a b 'c' \\"d\\" \\$e"
"""
UNINSTALL = 'echo "uninstalling $1" ; echo "$1" >> "$GOKKU_ROOT/uninstalled"\n'


@pytest.fixture
def cache_plugin(gokku, tmp_path):
    tree = write_plugin(
        tmp_path / "gokku-cache",
        layout="official",
        install=INSTALL,
        uninstall=UNINSTALL,
        commands={
            "commands/info": 'echo "info for $1 args: $*"\n',
            "commands/logs": 'printf "[%s]" "$@"; echo\n',
            "hooks/post-link": 'echo "post-link $*" >> "$GOKKU_ROOT/hooks.log"\n',
            "hooks/post-unlink": 'echo "post-unlink $*" >> "$GOKKU_ROOT/hooks.log"\n',
        },
    )
    gokku.ok("plugins:add", str(tree))
    return "cache"


@pytest.fixture
def service(gokku, cache_plugin):
    gokku.ok("services:create", "cache:7.2", "--name", "c1")
    return "c1"


def record(gokku, name):
    return json.loads((gokku.root / "services" / name / "config.json").read_text())


def env_of(gokku, app, env="shared"):
    return json.loads(gokku.ok("config:list", "-a", app, "--env", env, "--format", "json").stdout)


def test_create_writes_gokku_record_and_runs_install_with_version(gokku, cache_plugin):
    result = gokku.ok("services:create", "cache:7.2", "--name", "c1")
    assert "installing c1 version=[7.2] SERVICE_NAME=c1" in result.stdout
    data = record(gokku, "c1")
    for key in ("name", "plugin", "container_id", "running", "linked_apps", "created_at"):
        assert key in data
    assert (data["name"], data["plugin"], data["version"]) == ("c1", "cache", "7.2")
    assert data["config"]["port"] == "19400"
    assert (gokku.root / "services/c1/config.json").stat().st_mode & 0o777 == 0o600
    assert data["env"]["CACHE_URL"] == "cache://c1:19400"


def test_second_service_gets_next_port(gokku, service):
    gokku.ok("services:create", "cache", "--name", "c2")
    assert record(gokku, "c2")["config"]["port"] == "19401"
    assert record(gokku, "c2")["version"] == ""


def test_list_table_and_json(gokku, service):
    gokku.ok("apps:create", "api")
    gokku.ok("services:link", service, "-a", "api")
    table = gokku.ok("services:list").stdout.splitlines()
    assert table[0].split() == ["NAME", "PLUGIN", "VERSION", "STATUS", "LINKED", "APPS", "CREATED"]
    assert table[1].split()[:5] == ["c1", "cache", "7.2", "-", "api"]  # no status command
    listed = json.loads(gokku.ok("services:list", "--format", "json").stdout)
    assert [(s["name"], s["plugin"], s["status"], s["linked_apps"]) for s in listed] == [
        ("c1", "cache", "-", ["api"])
    ]


STATUS_SCRIPTS = {
    "up": "echo running\n",
    "down": "echo progress >&2; echo stopped\n",
    "odd": "echo 'running fast'\n",
    "failing": "echo running; exit 1\n",
    # Hangs, and leaves a child holding the pipe: both must go.
    "hangs": 'sleep 60 & echo "$$ $!" > "$GOKKU_ROOT/hangs.pids"; wait\n',
}


def test_list_asks_each_plugin_for_the_status_and_waits_only_so_long(gokku, tmp_path):
    for name, body in STATUS_SCRIPTS.items():
        tree = write_plugin(tmp_path / name, commands={"commands/status": body})
        gokku.ok("plugins:add", str(tree))
        gokku.ok("services:create", name, "--name", f"{name}-1")
    started = time.monotonic()
    listed = json.loads(gokku.ok("services:list", "--format", "json").stdout)
    assert time.monotonic() - started < STATUS_SECONDS + 2
    assert {s["name"]: s["status"] for s in listed} == {
        "up-1": "running",
        "down-1": "stopped",
        "odd-1": "unknown",
        "failing-1": "unknown",
        "hangs-1": "unknown",
    }
    pids = [int(p) for p in (gokku.root / "hangs.pids").read_text().split()]
    assert all(wait_gone(pid) for pid in pids), "the hanging status command was left running"
    rows = [line.split() for line in gokku.ok("up:list").stdout.splitlines()]
    assert rows[1][:4] == ["up-1", "up", "-", "running"]


def test_info_and_logs_pass_arguments_through(gokku, service):
    assert gokku.ok("services:info", service).stdout == "info for c1 args: c1\n"
    result = gokku.ok("services:logs", service, "-f", "--tail", "50", "a b")
    assert result.stdout == "[c1][-f][--tail][50][a b]\n"


def test_link_writes_exported_variables_exactly_and_unlink_removes_them(gokku, service):
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "-a", "api", "OTHER=kept")
    gokku.ok("services:link", service, "-a", "api")
    assert env_of(gokku, "api") == {
        "OTHER": "kept",
        "CACHE_URL": "cache://c1:19400",
        "CACHE_NOTE": "a b 'c' \"d\" $e",
    }
    assert record(gokku, service)["linked_apps"] == ["api"]
    gokku.ok("services:unlink", service, "-a", "api")
    assert env_of(gokku, "api") == {"OTHER": "kept"}
    assert record(gokku, service)["linked_apps"] == []
    hooks = (gokku.root / "hooks.log").read_text()
    assert hooks == "post-link c1 api shared\npost-unlink c1 api shared\n"


def test_link_to_named_env_and_relink_is_idempotent(gokku, service):
    gokku.ok("apps:create", "api")
    gokku.ok("services:link", service, "-a", "api", "--env", "production")
    gokku.ok("services:link", service, "-a", "api", "--env", "production")
    assert set(env_of(gokku, "api", "production")) == {"CACHE_URL", "CACHE_NOTE"}
    assert env_of(gokku, "api") == {}


def test_link_never_overwrites_another_links_variable(gokku, service):
    gokku.ok("services:create", "cache", "--name", "c2")
    gokku.ok("apps:create", "api")
    gokku.ok("services:link", service, "-a", "api")
    before = gokku.snapshot()
    result = gokku("services:link", "c2", "-a", "api")
    assert result.code == 1
    assert "CACHE_URL on app 'api' belongs to service 'c1'" in result.stderr
    assert gokku.snapshot() == before


def test_link_refuses_a_variable_the_user_set(gokku, service):
    gokku.ok("apps:create", "api")
    gokku.ok("config:set", "-a", "api", "CACHE_URL=mine")
    before = gokku.snapshot()
    result = gokku("services:link", service, "-a", "api")
    assert result.code == 1
    assert "CACHE_URL is already set on app 'api'" in result.stderr
    assert gokku.snapshot() == before


def test_config_cannot_touch_linked_variables(gokku, service):
    gokku.ok("apps:create", "api")
    gokku.ok("services:link", service, "-a", "api")
    for args in (
        ["config:set", "-a", "api", "CACHE_URL=x"],
        ["config:set", "api", "CACHE_URL=x"],
        ["config:unset", "-a", "api", "CACHE_URL"],
        ["config:import", "api"],
    ):
        result = gokku(*args, input=b"OTHER=1\nCACHE_URL=x\n")
        assert result.code == 1
        assert "belongs to service 'c1'" in result.stderr
    assert "OTHER" not in env_of(gokku, "api")
    assert env_of(gokku, "api")["CACHE_URL"] == "cache://c1:19400"


def test_service_exporting_nothing_is_linked_without_variables(gokku, tmp_path):
    """As the original: the link is recorded (a post-link hook may do the wiring)."""
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "quiet")))
    gokku.ok("services:create", "quiet", "--name", "q1")
    gokku.ok("apps:create", "api")
    result = gokku.ok("services:link", "q1", "-a", "api")
    assert "no variables written (its plugin exports none)" in result.stderr
    assert record(gokku, "q1")["linked_apps"] == ["api"]
    assert gokku.ok("config:list", "-a", "api").stdout == ""
    assert "removed no variables" in gokku.ok("services:unlink", "q1", "-a", "api").stderr
    assert record(gokku, "q1")["linked_apps"] == []


@pytest.mark.parametrize(
    ("plugin", "config", "expected"),
    [
        (
            "postgres",
            {"user": "u", "password": "p w", "port": "5433", "database": "db"},
            {
                "DATABASE_URL": "postgres://u:p w@localhost:5433/db",
                "POSTGRES_HOST": "localhost",
                "POSTGRES_PORT": "5433",
                "POSTGRES_USER": "u",
                "POSTGRES_PASSWORD": "p w",
                "POSTGRES_DB": "db",
            },
        ),
        (
            "redis",
            {"password": "secret", "port": "6380"},
            {
                "REDIS_URL": "redis://:secret@localhost:6380",
                "REDIS_HOST": "localhost",
                "REDIS_PORT": "6380",
                "REDIS_PASSWORD": "secret",
            },
        ),
    ],
)
def test_gokku_style_plugins_get_gokkus_variables_from_config(
    gokku, tmp_path, plugin, config, expected
):
    sets = "".join(f'update_service_config "$1" {k} "{v}"\n' for k, v in config.items())
    gokku.ok("plugins:add", str(write_plugin(tmp_path / f"gokku-{plugin}", install=sets)))
    gokku.ok("services:create", plugin, "--name", "s1")
    gokku.ok("apps:create", "api")
    gokku.ok("services:link", "s1", "-a", "api")
    assert env_of(gokku, "api") == expected


def test_gokku_style_link_with_missing_config_names_the_keys(gokku, tmp_path):
    install = 'update_service_config "$1" port 5433\n'
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "gokku-postgres", install=install)))
    gokku.ok("services:create", "postgres", "--name", "s1")
    gokku.ok("apps:create", "api")
    result = gokku("services:link", "s1", "-a", "api")
    assert result.code == 1
    assert "its config lacks user, password, database" in result.stderr
    assert env_of(gokku, "api") == {}


def test_failed_install_runs_uninstall_removes_dir_and_keeps_exit_code(gokku, tmp_path):
    install = 'echo "half-made $1"; update_service_config "$1" port 1; exit 7\n'
    tree = write_plugin(tmp_path / "broken", install=install, uninstall=UNINSTALL)
    gokku.ok("plugins:add", str(tree))
    result = gokku("services:create", "broken", "--name", "b1")
    assert result.code == 7
    assert "install exited 7; nothing was kept" in result.stderr
    assert "uninstalling b1" in result.stdout
    assert not (gokku.root / "services" / "b1").exists()
    assert gokku.ok("services:list").stdout == "No services\n"


def test_destroy_refuses_while_linked_then_force_unlinks_and_uninstalls(gokku, service):
    gokku.ok("apps:create", "api")
    gokku.ok("services:link", service, "-a", "api")
    result = gokku("services:destroy", service)
    assert result.code == 1
    assert "service 'c1' is linked to api (shared); unlink first or use --force" in result.stderr
    assert (gokku.root / "services" / service).is_dir()
    gokku.ok("services:destroy", service, "--force")
    assert env_of(gokku, "api") == {}
    assert not (gokku.root / "services" / service).exists()
    # The official layout keeps uninstall in bin/: it must have run (Gokku's bug 4).
    assert (gokku.root / "uninstalled").read_text() == "c1\n"


def test_destroy_keeps_service_when_uninstall_fails(gokku, tmp_path):
    tree = write_plugin(tmp_path / "sticky", uninstall="echo cannot >&2; exit 3\n")
    gokku.ok("plugins:add", str(tree))
    gokku.ok("services:create", "sticky", "--name", "s1")
    result = gokku("services:destroy", "s1", "--force")
    assert result.code == 3
    assert "uninstall of 's1' exited 3; the service is kept" in result.stderr
    assert (gokku.root / "services" / "s1" / "config.json").is_file()


def test_app_destroy_refuses_while_linked_and_force_unlinks(gokku, service):
    gokku.ok("apps:create", "api")
    gokku.ok("services:link", service, "-a", "api")
    result = gokku("apps:destroy", "api")
    assert result.code == 1 and "linked to c1" in result.stderr
    gokku.ok("apps:destroy", "api", "--force")
    assert record(gokku, service)["linked_apps"] == []


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["services:create", "cache"], 2, "missing --name"),
        (["services:create", "--name", "x"], 2, "missing argument"),
        (["services:create", "nope", "--name", "x"], 1, "plugin 'nope' is not installed"),
        (["services:create", "cache", "--name", "Bad"], 2, "invalid service name 'Bad'"),
        (["services:create", "cache", "--name", "c1"], 1, "service 'c1' already exists"),
        (["services:create", "../x", "--name", "x"], 2, "invalid plugin name"),
        (["services:info", "ghost"], 1, "service 'ghost' does not exist"),
        (["services:info"], 2, "missing service name"),
        (["services:logs", "../../etc"], 2, "invalid service name"),
        (["services:link", "c1"], 2, "missing -a APP"),
        (["services:link", "c1", "-a", "ghost"], 1, "app 'ghost' does not exist"),
        (["services:link", "ghost", "-a", "api"], 1, "service 'ghost' does not exist"),
        (["services:unlink", "c1", "-a", "api"], 1, "service 'c1' is not linked to app 'api'"),
        (["services:destroy", "ghost"], 1, "service 'ghost' does not exist"),
        (["services:destroy"], 2, "missing argument"),
        (["services:next-port", "70000"], 2, "invalid port '70000'"),
        (["cache:create"], 2, "missing argument; usage: gokku cache:create SVC [VERSION]"),
        (["cache:create", "Bad"], 2, "invalid service name 'Bad'"),
        (["cache:create", "c1"], 1, "service 'c1' already exists"),
        (["cache:create", "x", "1", "2"], 2, "unexpected argument '2'"),
        (["cache:link", "c1"], 2, "missing APP; usage: gokku cache:link SVC APP [--alias NAME]"),
        (["services:link", "c1", "-a", "api", "--alias", "reports"], 2, "invalid alias 'reports'"),
        (["services:link", "c1", "-a", "api", "--alias", "REPORTS_URL"], 2, "invalid alias"),
        (["services:link", "c1", "-a", "api", "--alias", "1X"], 2, "invalid alias '1X'"),
        (["services:link", "c1", "-a", "api", "--alias"], 2, "option --alias needs a value"),
        (["cache:link", "c1", "api", "--alias", "A B"], 2, "invalid alias 'A B'"),
        (["services:promote", "c1"], 2, "missing -a APP"),
        (["services:promote", "c1", "-a", "api"], 1, "service 'c1' is not linked to app 'api'"),
        (["services:promote", "c1", "-a", "api", "--alias", "X"], 2, "unknown option --alias"),
        (["cache:promote", "c1"], 2, "missing APP; usage: gokku cache:promote SVC APP"),
        (["cache:promote", "ghost", "api"], 1, "service 'ghost' does not exist"),
        (["cache:link", "c1", "ghost"], 1, "app 'ghost' does not exist"),
        (["cache:link", "ghost", "api"], 1, "service 'ghost' does not exist"),
        (["cache:link", "c1", "api", "-a", "BLUE"], 2, "two apps given (api and BLUE)"),
        (["cache:unlink", "c1", "api"], 1, "service 'c1' is not linked to app 'api'"),
        (["cache:destroy", "ghost"], 1, "service 'ghost' does not exist"),
        (["cache:destroy"], 2, "missing argument; usage: gokku cache:destroy SVC [--force]"),
        (["cache:list", "extra"], 2, "unexpected argument 'extra'"),
    ],
)
def test_bad_input_is_one_line_error_and_changes_nothing(gokku, service, args, code, message):
    gokku.ok("apps:create", "api")
    before = gokku.snapshot()
    result = gokku(*args)
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert gokku.snapshot() == before


def test_plugin_command_refuses_another_plugins_service(gokku, service, tmp_path):
    gokku.ok(
        "plugins:add",
        str(write_plugin(tmp_path / "other", commands={"commands/peek": "echo peek\n"})),
    )
    gokku.ok("apps:create", "api")
    before = gokku.snapshot()
    for args in (
        ["other:peek", service],
        ["other:info", service],  # its own script
        ["other:destroy", service, "--force"],  # Dokku's forms
        ["other:link", service, "api"],
        ["other:unlink", service, "api"],
    ):
        result = gokku(*args)
        assert result.code == 1, args
        assert result.stderr == " !     service 'c1' belongs to plugin 'cache', not 'other'\n"
    assert gokku.snapshot() == before
    assert gokku.ok("other:list").stdout == "No other services\n"


def test_dokku_forms_are_the_services_verbs(gokku, cache_plugin, tmp_path):
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "quiet")))
    gokku.ok("services:create", "quiet", "--name", "q1")
    created = gokku.ok("cache:create", "c1", "7.2")
    assert "installing c1 version=[7.2] SERVICE_NAME=c1" in created.stdout
    gokku.ok("cache:create", "c2")
    assert (record(gokku, "c1")["version"], record(gokku, "c2")["version"]) == ("7.2", "")
    listed = json.loads(gokku.ok("cache:list", "--format", "json").stdout)
    assert [(s["name"], s["plugin"]) for s in listed] == [("c1", "cache"), ("c2", "cache")]
    assert gokku.ok("quiet:list").stdout.splitlines()[1].split()[:2] == ["q1", "quiet"]
    gokku.ok("apps:create", "api")
    gokku.ok("cache:link", "c1", "api")
    assert env_of(gokku, "api")["CACHE_URL"] == "cache://c1:19400"
    gokku.ok("-a", "api", "cache:unlink", "c1")  # the app from the global flag
    assert env_of(gokku, "api") == {}
    gokku.ok("cache:link", "c1", "api", "--env", "production")
    assert set(env_of(gokku, "api", "production")) == {"CACHE_URL", "CACHE_NOTE"}
    refused = gokku("cache:destroy", "c1")
    assert refused.code == 1 and "linked to api (production)" in refused.stderr
    gokku.ok("cache:destroy", "c1", "--force")
    assert not (gokku.root / "services" / "c1").exists()
    assert env_of(gokku, "api", "production") == {}
    assert (gokku.root / "uninstalled").read_text() == "c1\n"
    hooks = (gokku.root / "hooks.log").read_text().splitlines()
    assert hooks == [
        "post-link c1 api shared",
        "post-unlink c1 api shared",
        "post-link c1 api production",
        "post-unlink c1 api production",  # a forced destroy unlinks as unlink does
    ]


def test_a_failing_post_unlink_hook_does_not_stop_a_forced_destroy_halfway(gokku, tmp_path):
    hooks = {"hooks/post-unlink": 'echo "cannot tidy $2" >&2; exit 3\n'}
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "sticky", commands=hooks)))
    gokku.ok("services:create", "sticky", "--name", "s1")
    gokku.ok("apps:create", "api")
    gokku.ok("apps:create", "web")
    for app in ("api", "web"):
        gokku.ok("services:link", "s1", "-a", app)
    result = gokku.ok("services:destroy", "s1", "--force")
    assert result.stderr.count("post-unlink hook exited 3; destroying s1 anyway") == 2
    assert "cannot tidy api" in result.stderr and "cannot tidy web" in result.stderr
    assert not (gokku.root / "services" / "s1").exists()
    assert gokku("services:info", "s1").code != 0


def test_a_plugins_own_script_of_that_name_wins(gokku, tmp_path):
    scripts = {"commands/destroy": 'echo "own destroy $*"\n', "commands/list": "echo own list\n"}
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "own", commands=scripts)))
    gokku.ok("services:create", "own", "--name", "o1")
    assert gokku.ok("own:destroy", "o1").stdout == "own destroy o1\n"
    assert (gokku.root / "services" / "o1" / "config.json").is_file()
    assert gokku.ok("own:list").stdout == "own list\n"
    assert gokku.ok("own:info", "o1").stdout == "info o1\n"


# A Gokku-style postgres plugin: Gokku derives DATABASE_URL and POSTGRES_* from its config.
PG_INSTALL = """
update_service_config "$1" user "u-$1"
update_service_config "$1" password "p-$1"
update_service_config "$1" port "$(get_next_port 19500)"
update_service_config "$1" database "$1"
"""


@pytest.fixture
def databases(gokku, tmp_path):
    """Two databases, main (linked to api the usual way) and reports, and their URLs."""
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "gokku-postgres", install=PG_INSTALL)))
    gokku.ok("apps:create", "api")
    urls = {}
    for port, name in enumerate(("main", "reports"), start=19500):
        gokku.ok("services:create", "postgres", "--name", name)
        urls[name] = f"postgres://u-{name}:p-{name}@localhost:{port}/{name}"
    gokku.ok("config:set", "-a", "api", "OTHER=kept")
    gokku.ok("services:link", "main", "-a", "api")
    return urls


def test_a_link_under_an_alias_writes_its_variables_under_it(gokku, databases):
    result = gokku.ok("services:link", "reports", "-a", "api", "--alias", "REPORTS")
    assert "REPORTS_URL" in result.stderr
    env = env_of(gokku, "api")
    assert env["DATABASE_URL"] == databases["main"]
    assert {k: v for k, v in env.items() if k.startswith("REPORTS_")} == {
        "REPORTS_URL": databases["reports"],
        "REPORTS_HOST": "localhost",
        "REPORTS_PORT": "19501",
        "REPORTS_USER": "u-reports",
        "REPORTS_PASSWORD": "p-reports",
        "REPORTS_DB": "reports",
    }
    assert record(gokku, "reports")["links"] == [
        {
            "app": "api",
            "env": "shared",
            "alias": "REPORTS",
            "keys": [k for k in sorted(env) if k.startswith("REPORTS_")],
        }
    ]
    gokku.ok("services:unlink", "reports", "-a", "api")
    assert set(env_of(gokku, "api")) == {"OTHER", "DATABASE_URL", *(f"POSTGRES_{k}" for k in (
        "HOST", "PORT", "USER", "PASSWORD", "DB"))}  # fmt: skip
    gokku.ok("postgres:link", "reports", "api", "--alias", "BLUE_DATABASE")  # Dokku's form
    assert env_of(gokku, "api")["BLUE_DATABASE_URL"] == databases["reports"]


def test_promote_makes_an_aliased_link_the_primary_and_keeps_the_former_under_an_alias(
    gokku, databases
):
    gokku.ok("services:link", "reports", "-a", "api", "--alias", "REPORTS")
    result = gokku.ok("services:promote", "reports", "-a", "api")
    assert "main is kept under its alias MAIN (MAIN_*)" in result.stderr
    env = env_of(gokku, "api")
    assert env["DATABASE_URL"] == env["REPORTS_URL"] == databases["reports"]
    assert env["POSTGRES_DB"] == env["REPORTS_DB"] == "reports"
    assert env["MAIN_URL"] == databases["main"] and env["MAIN_PASSWORD"] == "p-main"
    assert env["OTHER"] == "kept" and len(env) == 1 + 6 + 6 + 6
    before = gokku.snapshot()
    again = gokku("services:promote", "reports", "-a", "api")
    assert (again.code, again.stderr) == (
        1,
        " !     service 'reports' is promoted on app 'api' already\n",
    )
    assert gokku.snapshot() == before
    # Back the other way, through Dokku's form: reports keeps only its REPORTS_*.
    gokku.ok("postgres:promote", "main", "api")
    env = env_of(gokku, "api")
    assert env["DATABASE_URL"] == env["MAIN_URL"] == databases["main"]
    assert env["REPORTS_URL"] == databases["reports"] and len(env) == 1 + 6 + 6 + 6
    # Each unlink takes exactly its own variables.
    gokku.ok("services:unlink", "main", "-a", "api")
    assert set(env_of(gokku, "api")) == {"OTHER", *(k for k in env if k.startswith("REPORTS_"))}
    gokku.ok("services:unlink", "reports", "-a", "api")
    assert env_of(gokku, "api") == {"OTHER": "kept"}


def test_alias_and_promote_refusals_change_nothing(gokku, databases, tmp_path):
    gokku.ok("services:create", "postgres", "--name", "9db")
    gokku.ok("config:set", "-a", "api", "TAKEN_URL=mine")
    two_urls = 'set_service_env "$1" A_URL a; set_service_env "$1" B_URL b\n'
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "twice", install=two_urls)))
    gokku.ok("services:create", "twice", "--name", "t1")
    attempts = [
        (["services:link", "reports", "-a", "api", "--alias", "TAKEN"], "TAKEN_URL is already set"),
        (["services:link", "reports", "-a", "api", "--alias", "MAIN"], None),  # then refused:
        (["services:link", "9db", "-a", "api", "--alias", "MAIN"], "MAIN_URL on app 'api' belongs"),
        (["services:promote", "main", "-a", "api"], "without an alias: it is the primary one"),
        (
            ["services:promote", "reports", "-a", "api"],
            "MAIN_URL would be written by both 'main' and 'reports'",
        ),
        (["services:link", "t1", "-a", "api", "--alias", "X"], "would write two of the"),
    ]
    for args, message in attempts:
        if message is None:
            gokku.ok(*args)
            continue
        before = gokku.snapshot()
        result = gokku(*args)
        assert result.code == 1 and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1
        assert gokku.snapshot() == before
    # A former primary whose name makes no variable name needs an alias of its own first.
    gokku.ok("services:unlink", "main", "-a", "api")
    gokku.ok("services:unlink", "reports", "-a", "api")
    gokku.ok("services:link", "9db", "-a", "api")
    gokku.ok("services:link", "reports", "-a", "api", "--alias", "REPORTS")
    before = gokku.snapshot()
    result = gokku("services:promote", "reports", "-a", "api")
    assert result.code == 1 and "service '9db' has no alias to keep its variables" in result.stderr
    assert gokku.snapshot() == before
    # Nor may the alias a former primary is kept under overwrite a variable you set.
    gokku.ok("services:unlink", "9db", "-a", "api")
    gokku.ok("services:link", "main", "-a", "api")
    gokku.ok("config:set", "-a", "api", "MAIN_HOST=mine")
    before = gokku.snapshot()
    result = gokku("services:promote", "reports", "-a", "api")
    assert result.code == 1 and "MAIN_HOST is already set on app 'api'" in result.stderr
    assert gokku.snapshot() == before
