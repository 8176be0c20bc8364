"""Who may do what, tried as an attacker would through both doors with the OpenSSH
client: a member key against every admin and internal verb, grants opening exactly what
they name, the remote surface (no server paths, no door verbs), names with trailing
newlines, and a session bound to the fingerprint that logged in."""

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import Gokku
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, make_key, running_server, wait_until

from gokku.commands import BUILTINS, PLUGIN_FORMS

# A real attempt at each verb a member may not run: the refusal must come from access,
# not from a usage error that happened to stop it first.
ATTEMPTS = {
    "plugins:add": "plugins:add redis",
    "plugins:list": "plugins:list",
    "plugins:update": "plugins:update t",
    "plugins:remove": "plugins:remove t --force",
    "plugins:validate": "plugins:validate t",
    "plugins:config": "plugins:config t",
    "plugins:config:set": "plugins:config:set t K=v",
    "plugins:config:unset": "plugins:config:unset t K",
    "plugins:pin": "plugins:pin t 1.0.0",
    "plugins:unpin": "plugins:unpin t",
    "plugins:disable": "plugins:disable t",
    "plugins:enable": "plugins:enable t",
    "plugins:install-dependencies": "plugins:install-dependencies t",
    "plugins:index": "plugins:index add evil https://example.invalid/index",
    "plugins:search": "plugins:search t",
    "plugins:info": "plugins:info t",
    "plugins:outdated": "plugins:outdated",
    "plugins:auto-update": "plugins:auto-update on",
    "plugins:publish": "plugins:publish acme/t@v1 --index idx --version 1.0.0 --sign-key k",
    "services:create": "services:create t --name evil",
    "services:destroy": "services:destroy db --force",
    "services:config-get": "services:config-get db",
    "services:config-set": "services:config-set db password=x",
    "services:env-set": "services:env-set db DATABASE_URL=x",
    "services:next-port": "services:next-port 9000",
    "services:schedule": "services:schedule add db '0 3 * * *' -- backup",
    "apps:create": "apps:create evil",
    "apps:destroy": "apps:destroy api --force",
    "ssh-keys:add": "ssh-keys:add evil --role admin",
    "ssh-keys:list": "ssh-keys:list",
    "ssh-keys:remove": "ssh-keys:remove alice",
    "access:grant": "access:grant bob app:api",
    "access:revoke": "access:revoke bob app:api",
    "access:list": "access:list",
    "doctor": "doctor --fix",
    "serve": "serve --host 0.0.0.0 --port 0",
    "ssh-command": "ssh-command --fingerprint SHA256:x",
    "git-hook": "git-hook pre-receive api",
    "sandbox-run": "sandbox-run api -- id",
    "sandbox-client": "sandbox-client --trusted PGHOST -- id",
}

# Dokku's forms of admin verbs, through the test plugin (it has no scripts of those names).
FORM_ATTEMPTS = {"create": "t:create evil", "destroy": "t:destroy db --force"}


@pytest.fixture
def bob(gokku: Gokku, keydir: Path) -> KeyPair:
    """A member key, registered the default way (no --role)."""
    key = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=key.public.encode())
    return key


@pytest.fixture
def estate(gokku: Gokku, test_plugin: str) -> None:
    """Two apps and two services of the test plugin, none of them granted to anyone."""
    for app in ("api", "web"):
        gokku.ok("apps:create", app)
    for service in ("db", "cache"):
        gokku.ok("services:create", "t", "--name", service)


def test_every_verb_a_member_may_not_run_is_in_the_attempts() -> None:
    """A verb added to the table as ADMIN or LOCAL must be tried by the test below."""
    guarded = {verb for verb, b in BUILTINS.items() if b.access in ("admin", "local")}
    assert guarded == set(ATTEMPTS)


def test_every_admin_form_is_in_the_form_attempts() -> None:
    guarded = {command for command, f in PLUGIN_FORMS.items() if f.access in ("admin", "local")}
    assert guarded == set(FORM_ATTEMPTS)


def test_member_is_refused_the_dokku_forms_of_admin_verbs(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    before = gokku.snapshot()
    for command, attempt in FORM_ATTEMPTS.items():
        result = door.ssh(attempt, key=bob.path)
        assert (result.code, result.stderr) == (
            1,
            f" !     bob may not run t:{command} (admins only): ask an admin\n",
        )
    changed = {k for k, v in gokku.snapshot().items() if before.get(k) != v}
    assert changed == {"log/audit.log"}


def test_dokku_forms_need_the_grants_of_their_verbs(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    def as_bob(command: str, input: bytes = b"K=w\n") -> tuple[int, str, str]:
        result = door.ssh(command, key=bob.path, input=input)
        return result.code, result.stdout, result.stderr

    writes = (
        "config:set api K=w",
        "config:set --encoded api K=dw==",
        "config:unset api K",
        "config:import api",
        "-a api config:set api K=w",  # the client's form: the global -a and the app first
    )
    reads = ("config:get api K", "config:show api", "config:export api", "-a api config:get api K")
    gokku.ok("config:set", "-a", "api", "K=v")
    before = gokku.snapshot()
    for command in (*writes, *reads, "t:link db api", "t:unlink db api"):
        code, _, err = as_bob(command)
        assert code == 1 and err.count("\n") == 1, command
        assert err.startswith(" !     bob may not ") and "app 'api'" in err, command
    assert as_bob("t:list")[1] == "No t services\n"
    changed = {k for k, v in gokku.snapshot().items() if before.get(k) != v}
    assert changed == {"log/audit.log"}

    gokku.ok("access:grant", "bob", "app:api", "--read")
    assert [as_bob(command)[1] for command in reads] == ["v\n", "K=v\n", "export K=v\n", "v\n"]
    for command in writes:
        code, _, err = as_bob(command)
        assert (code, err) == (
            1,
            " !     bob may not write app 'api': ask an admin for access:grant bob app:api\n",
        )
    gokku.ok("access:grant", "bob", "app:api")
    assert as_bob("config:import api", input=b"K=w\nL='a b'\n")[0] == 0
    assert as_bob("config:set --encoded api M=eA==")[0] == 0
    assert json.loads(gokku.ok("config:list", "api", "--format", "json").stdout) == {
        "K": "w",
        "L": "a b",
        "M": "x",
    }
    # Linking needs write on the service too; a read grant shows it in t:list.
    code, _, err = as_bob("t:link db api")
    assert code == 1 and "bob may not write service 'db'" in err
    gokku.ok("access:grant", "bob", "service:db", "--read")
    assert [line.split()[0] for line in as_bob("t:list")[1].splitlines()[1:]] == ["db"]
    assert "bob may not write service 'db'" in as_bob("t:link db api")[2]
    gokku.ok("access:grant", "bob", "service:db")
    assert "bob may not write app 'web'" in as_bob("t:link db web")[2]
    code, _, err = as_bob("t:link db api")  # the test plugin exports nothing: no variables
    assert code == 0 and "no variables written" in err


def test_alias_links_and_promote_need_write_on_the_app_and_on_the_service(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    commands = (
        "services:link db -a api --alias X",
        "t:link db api --alias X",
        "services:promote db -a api",
        "t:promote db api",
    )

    def refusals() -> list[str]:
        before = gokku.snapshot()
        results = [door.ssh(command, key=bob.path) for command in commands]
        assert all(r.code == 1 and r.stderr.count("\n") == 1 for r in results)
        changed = {k for k, v in gokku.snapshot().items() if before.get(k) != v}
        assert changed == {"log/audit.log"}
        return [r.stderr for r in results]

    assert all("bob may not write app 'api'" in err for err in refusals())
    gokku.ok("access:grant", "bob", "app:api")
    gokku.ok("access:grant", "bob", "service:db", "--read")
    assert all("bob may not write service 'db'" in err for err in refusals())
    gokku.ok("access:grant", "bob", "service:db")
    promoted = door.ssh("services:promote db -a api", key=bob.path)
    assert promoted.stderr == " !     service 'db' is not linked to app 'api' (shared)\n"
    assert door.ssh("services:link db -a api --alias X", key=bob.path).code == 0


def test_member_is_refused_every_admin_and_internal_verb(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    before = gokku.snapshot()
    for verb, command in ATTEMPTS.items():
        result = door.ssh(command, key=bob.path, input=bob.public.encode())
        assert result.code == 1, (verb, result.stderr)
        (line,) = result.stderr.splitlines()
        if BUILTINS[verb].access == "local":
            assert line == f" !     {verb} is not available over SSH", verb
        else:
            assert line == f" !     bob may not run {verb} (admins only): ask an admin", verb
    changed = {k for k, v in gokku.snapshot().items() if before.get(k) != v}
    assert changed == {"log/audit.log"}
    denied = [entry for entry in door.audit() if entry["key"] == "bob"]
    assert len(denied) == len(ATTEMPTS)
    assert all(entry["denied"] and entry["exit"] == 1 for entry in denied)


def test_admins_too_cannot_reach_door_and_helper_verbs(door: Door, estate: None) -> None:
    """alice is an admin: still no server of her own, no passwords through the helpers."""
    for verb in (
        "serve",
        "ssh-command",
        "git-hook",
        "services:config-get",
        "services:next-port",
        "services:schedule",
        "plugins:install-dependencies",
    ):
        result = door.ssh(ATTEMPTS[verb])
        assert (result.code, result.stderr) == (1, f" !     {verb} is not available over SSH\n")
    nested = door.ssh("ssh-command --key x")
    assert nested.stderr.count("\n") == 1 and "Traceback" not in nested.stderr
    assert door.audit()[-1]["argv"] == ["ssh-command", "--key", "x"]


def test_a_reader_gets_all_of_a_fast_scripts_masked_output(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    """A read grant's output goes through the worker's mask; a script that writes and ends
    at once must still have its every line delivered (the embedded door once dropped it
    when the script's exit arrived with its hand-over, before the session took the pipes).
    That race is the embedded door's, whose zygote hands the pipes over: it takes 100
    sessions to show. The OpenSSH door's session masks in its own process: ten check it."""
    import concurrent.futures

    gokku.ok("access:grant", "bob", "service:db", "--read")

    def one(_: int) -> tuple[int, str]:
        result = door.ssh("t:info db", key=bob.path)
        return result.code, result.stdout

    sessions = 100 if door.kind == "embedded" else 10
    # Ten at a time: a member key's connections are capped (16 by default).
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        assert list(pool.map(one, range(sessions))) == [(0, "info db\n")] * sessions


def test_grants_open_exactly_what_they_name(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    def as_bob(command: str, **kwargs) -> tuple[int, str, str]:
        result = door.ssh(command, key=bob.path, **kwargs)
        return result.code, result.stdout, result.stderr

    code, _, err = as_bob("config:set -a api K=v")
    assert code == 1
    assert err == (
        " !     bob may not write app 'api': ask an admin for access:grant bob app:api\n"
    )
    assert as_bob("apps:list")[1] == "No apps\n"
    gokku.ok("access:grant", "bob", "app:api")
    gokku.ok("access:grant", "bob", "service:db", "--read")
    assert as_bob("config:set -a api K=v")[0] == 0
    assert as_bob("config:get -a api K")[1] == "v\n"
    assert as_bob("config:get -a web K")[0] == 1
    assert as_bob("config:set -a web K=v")[0] == 1
    assert as_bob("apps:list")[1] == "api\n"
    assert [s["name"] for s in json.loads(as_bob("services:list --format json")[1])] == ["db"]
    # Plugin commands by their declared access: info reads, args (undeclared) writes,
    # logs is declared admin, whoami any.
    assert as_bob("t:info db")[1] == "info db\n"
    assert as_bob("services:info db")[0] == 0
    code, _, err = as_bob("t:args db")
    assert code == 1 and "access:grant bob service:db" in err
    assert as_bob("t:logs db")[0] == 1
    assert as_bob("services:logs db")[0] == 1  # the same declaration, another way in
    assert as_bob("services:stop db")[0] == 1
    assert as_bob("t:info cache")[0] == 1
    assert as_bob("t:whoami")[1].startswith("bob SHA256:")
    code, _, err = as_bob("t:args")
    assert code == 1 and "without naming a t service" in err
    # Linking needs write on both sides.
    code, _, err = as_bob("services:link db -a api")
    assert code == 1 and "may not write service 'db'" in err
    gokku.ok("access:grant", "bob", "service:db")
    assert as_bob("t:args db x")[1] == "[db]\n[x]\n"
    assert as_bob("services:link db -a web")[0] == 1
    # Not a plugin command: lifecycle scripts run only through create and destroy.
    for verb in ("t:install db", "t:uninstall db"):
        assert as_bob(verb)[0] == 127
        assert door.ssh(verb).code == 127
    # Admin-only even with grants; --trace would print what the scripts read.
    assert as_bob("services:destroy db --force")[0] == 1
    code, _, err = as_bob("--trace t:info db")
    assert code == 1 and "may not use --trace" in err
    listed = json.loads(as_bob("whoami --format json")[1])
    assert listed["role"] == "member"
    assert listed["grants"] == {"app:api": "write", "service:db": "write"}
    gokku.ok("access:revoke", "bob", "app:api")
    assert as_bob("config:get -a api K")[0] == 1


def test_destroying_an_app_forgets_its_grants(gokku: Gokku, bob: KeyPair, estate: None) -> None:
    gokku.ok("access:grant", "bob", "app:web", "--read")
    gokku.ok("apps:destroy", "web", "--force")
    gokku.ok("apps:create", "web")
    assert json.loads(gokku.ok("access:list", "bob", "--format", "json").stdout) == [
        {"name": "bob", "role": "member", "grants": {}}
    ]


def test_grant_refuses_what_does_not_exist(gokku: Gokku, bob: KeyPair, estate: None) -> None:
    before = gokku.snapshot()
    for args, code, said in [
        (("bob", "app:nope"), 1, "app 'nope' does not exist"),
        (("bob", "service:nope"), 1, "service 'nope' does not exist"),
        (("nobody", "app:api"), 1, "no key named 'nobody'"),
        (("bob", "plugin:t"), 2, "name an app:APP or a service:SVC"),
        (("bob", "app:api\n"), 2, "invalid app name"),
        (("bob",), 2, "missing argument"),
    ]:
        result = gokku("access:grant", *args)
        assert (result.code, result.stderr.count("\n")) == (code, 1), args
        assert said in result.stderr
    assert gokku.snapshot() == before


def test_push_needs_write_and_creating_an_app_needs_admin(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None, tmp_path: Path
) -> None:
    work = tmp_path / "work"
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    (work / "f").write_text("x")
    subprocess.run([*git, "-C", str(work), "add", "f"], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-qm", "x"], check=True)
    ssh = shlex.join(door.ssh_argv(key=bob.path)[:-1])
    user = door.ssh_argv()[-1]

    def push(app: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*git, "-C", str(work), "push", f"{user}:{app}", "main"],
            env={**os.environ, "GIT_SSH_COMMAND": ssh},
            capture_output=True,
            text=True,
        )

    refused = push("evil")  # a missing app is refused as a hidden one is (no probing)
    assert refused.returncode != 0 and "bob may not write app 'evil'" in refused.stderr
    assert not (gokku.root / "apps" / "evil").exists()
    assert "bob may not write app 'api'" in push("api").stderr
    gokku.ok("access:grant", "bob", "app:api")
    assert push("api").returncode == 0
    assert (gokku.root / "repos" / "api.git").is_dir()


def test_over_ssh_the_server_reads_none_of_its_own_files(
    door: Door, gokku: Gokku, estate: None, tmp_path: Path
) -> None:
    """The reproduced attack: push a plugin, then install it from the server's own path."""
    secret = tmp_path / "secret.pub"
    secret.write_text("root:$6$hash:19000:0:99999:7:::\nline two\n")
    before = gokku.snapshot()
    for command in (
        f"plugins:add {gokku.root}/repos/evil.git --name evil",
        f"plugins:add file://{gokku.root}/plugins/t --name evil",
        f"plugins:add {gokku.root}/plugins/t --name evil",
        f"plugins:validate {gokku.root}/plugins/t",
        f"ssh-keys:add evil {secret}",
    ):
        result = door.ssh(command)
        assert result.code == 2, (command, result.stderr)
        assert result.stderr.count("\n") == 1
        assert "$6$" not in result.stderr and "line" not in result.stderr
    assert gokku.snapshot().keys() - {"log/audit.log"} == before.keys() - {"log/audit.log"}


def test_names_are_whole_strings(gokku: Gokku, test_plugin: str, tmp_path: Path) -> None:
    gokku.ok("apps:create", "api")
    before = gokku.snapshot()
    for args in (
        ("apps:create", "api\n"),
        ("services:create", "t", "--name", "db\n"),
        ("services:create", "t\n", "--name", "db"),
        ("config:set", "-a", "api", "id\n=x"),
        ("config:set", "-a", "api\n", "K=x"),
        ("config:set", "-a", "api", "--env", "prod\n", "K=x"),
        ("ssh-keys:add", "k\n"),
        ("plugins:add", "redis", "--name", "r\n"),
    ):
        result = gokku(*args, input=b"")
        assert result.code == 2, args
        assert result.stderr.count("\n") == 1, result.stderr
    assert gokku.snapshot() == before
    assert gokku.ok("apps:list").stdout == "api\n"
    # The same rule in the Bash helpers: a name with a trailing newline is not a name.
    from gokku.runner import helpers_text

    helpers = tmp_path / "plugin-helpers.sh"
    helpers.write_bytes(helpers_text())
    probe = subprocess.run(
        ["bash", "-c", f'source {helpers}; service_path "$1"', "-", "db\n"],
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 2 and "invalid service name" in probe.stderr


def test_the_audit_log_keeps_no_config_values(door: Door, gokku: Gokku, estate: None) -> None:
    assert door.ssh("config:set -a api TOKEN=hunter2 'B=x y'").code == 0
    assert door.audit()[-1]["argv"] == [
        "config:set",
        "-a",
        "api",
        "TOKEN=<redacted>",
        "B=<redacted>",
    ]
    assert door.ssh("config:set --encoded api TOKEN=aHVudGVyMg==").code == 0
    assert door.audit()[-1]["argv"] == ["config:set", "--encoded", "api", "TOKEN=<redacted>"]
    log = (gokku.root / "log" / "audit.log").read_bytes()
    assert b"hunter2" not in log and b"aHVudGVyMg" not in log


def test_helpers_pass_secrets_on_stdin_never_in_argv(gokku: Gokku, tmp_path: Path) -> None:
    """A spy stands where the helpers' gokku runs and writes down each argv it is given:
    what every local user would see in ps."""
    from conftest import write_plugin

    spy = tmp_path / "spy"
    real = sys.executable  # the callback's environment is emptied: the spy names it
    spy.write_text(f'#!/bin/bash\nprintf "%s\\n" "$*" >> {tmp_path}/argv\nexec {real} "$@"\n')
    spy.chmod(0o755)
    install = (
        "GOKKU_PYTHON=" + str(spy) + "\n"
        'update_service_config "$1" password "pw-s3cret"\n'
        'set_service_env "$1" URL "x://u:pw-s3cret@h"\n'
        'set_app_env api shared TOKEN "pw-s3cret two"\n'
    )
    write_plugin(tmp_path / "src" / "s", install=install)
    gokku.ok("plugins:add", str(tmp_path / "src" / "s"))
    gokku.ok("apps:create", "api")
    gokku.ok("services:create", "s", "--name", "db")
    seen = (tmp_path / "argv").read_text()
    assert seen.count("\n") == 3 and "pw-s3cret" not in seen
    assert gokku.ok("config:get", "-a", "api", "TOKEN").stdout == "pw-s3cret two\n"
    record = json.loads((gokku.root / "services" / "db" / "config.json").read_text())
    assert record["config"]["password"] == "pw-s3cret"


def test_a_session_is_bound_to_the_fingerprint_that_logged_in(
    door: Door, gokku: Gokku, bob: KeyPair, keydir: Path, estate: None, tmp_path: Path
) -> None:
    """bob's connection stays open (OpenSSH connection sharing); bob's key is removed and
    the name given to a new admin key: the old connection gets no new command."""
    control = tmp_path / "cm"
    shared = ("-o", f"ControlPath={control}", "-o", "ControlPersist=60")
    first = door.ssh("whoami", "-o", "ControlMaster=yes", *shared, key=bob.path)
    assert first.code == 0 and "member" in first.stdout
    try:
        assert door.ssh("whoami", "-o", "ControlMaster=no", *shared, key=bob.path).code == 0
        gokku.ok("ssh-keys:remove", "bob")
        other = make_key(keydir, "other")
        gokku.ok("ssh-keys:add", "bob", "--role", "admin", input=other.public.encode())
        again = door.ssh("apps:create x", "-o", "ControlMaster=no", *shared, key=bob.path)
        assert again.code != 0
        assert not (gokku.root / "apps" / "x").exists()
        assert all(e["fingerprint"] != "" for e in door.audit())
    finally:
        door.ssh(None, "-O", "exit", *shared, key=bob.path)


def test_registry_from_before_roles_keeps_admins_and_says_so_once(
    gokku: Gokku, bob: KeyPair
) -> None:
    path = gokku.root / "ssh" / "keys.json"
    document = json.loads(path.read_text())
    legacy = {"keys": [{k: v for k, v in key.items() if k not in ("role", "grants")}
                       for key in document["keys"]]}  # fmt: skip
    path.write_text(json.dumps(legacy))
    first = gokku.ok("ssh-keys:list", "--format", "json")
    assert "1 key(s) registered before roles existed keep the admin role: bob" in first.stderr
    assert json.loads(first.stdout)[0]["role"] == "admin"
    assert gokku.ok("ssh-keys:list").stderr == ""
    assert path.stat().st_mode & 0o777 == 0o600


def test_an_authorized_keys_line_from_before_fingerprints_works_once(
    gokku: Gokku, bob: KeyPair
) -> None:
    """Such a line says --key NAME: it is honoured while the registry (and the lines) are
    rewritten, and refused after that, when the name could belong to another key."""
    path = gokku.root / "ssh" / "keys.json"
    document = json.loads(path.read_text())
    path.write_text(json.dumps({"keys": document["keys"]}))
    door = {"SSH_ORIGINAL_COMMAND": "whoami --format json"}
    first = gokku("ssh-command", "--key", "bob", env=door)
    assert first.code == 0 and json.loads(first.stdout)["role"] == "admin"
    lines = (gokku.root / "ssh" / "authorized_keys").read_text()
    assert "--fingerprint SHA256:" in lines and "--key" not in lines
    again = gokku("ssh-command", "--key", "bob", env=door)
    assert again.code == 1 and "no longer registered" in again.stderr


def test_state_other_users_need_not_read_is_owner_only(
    gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    root = gokku.root
    for path in (
        root / "ssh" / "keys.json",
        root / "plugins" / "t" / "config.json",
        root / "services" / "db" / "config.json",
        root / "locks" / "service-db.lock",
    ):
        assert path.stat().st_mode & 0o077 == 0, path
    assert (root / "locks").stat().st_mode & 0o077 == 0


def test_create_leaves_a_directory_it_did_not_make(gokku: Gokku, test_plugin: str) -> None:
    data = gokku.root / "services" / "db"
    data.mkdir(parents=True)
    (data / "precious").write_text("keep me")
    result = gokku("services:create", "t", "--name", "db")
    assert result.code == 1 and "exists but is no service" in result.stderr
    assert [p.name for p in data.iterdir()] == ["precious"]


def test_server_runs_its_package_not_the_one_in_its_working_directory(
    gokku: Gokku, base_env: dict[str, str], alice: KeyPair, tmp_path: Path
) -> None:
    trap = tmp_path / "cwd"
    (trap / "gokku").mkdir(parents=True)
    marker = tmp_path / "hijacked"
    (trap / "gokku" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    (trap / "gokku" / "__main__.py").write_text("")
    with running_server(base_env, cwd=trap) as (_, port):
        door = Door("embedded", port, "gokku", alice, gokku.root)
        assert door.ssh("version").stdout.startswith("gokku ")
    assert not marker.exists()


TIGHT = {"workers": 2, "max_startups": "10:30:50", "max_startups_per_address": 10}


@pytest.mark.serial  # a 2-second deadline: the machine to itself
@pytest.mark.parametrize("ssh_settings", [{"workers": 2}, TIGHT])
def test_a_flood_of_idle_connections_does_not_lock_keys_out(
    gokku: Gokku, base_env: dict[str, str], alice: KeyPair, ssh_settings: dict
) -> None:
    """300 TCP connections from six loopback addresses that never log in; a registered
    key still runs a command within 2 seconds: with the default caps, and with caps so
    tight that the flood fills them (then the oldest idle connections make room)."""
    with running_server(base_env) as (_, port):
        flood = []
        try:
            for i in range(300):
                sock = socket.socket()
                sock.bind((f"127.0.0.{2 + i % 6}", 0))
                sock.settimeout(5)
                sock.connect(("127.0.0.1", port))
                flood.append(sock)
            time.sleep(1.5)  # held open and idle
            door = Door("embedded", port, "gokku", alice, gokku.root)
            started = time.monotonic()
            result = door.ssh("version", timeout=10)
            elapsed = time.monotonic() - started
            assert result.code == 0, result.stderr
            assert elapsed < 2.0
            if ssh_settings is TIGHT:  # 2 workers x 6 addresses x 10 at most stay
                assert wait_until(lambda: sum(_closed(s) for s in flood) >= 180, 5)
        finally:
            for sock in flood:
                sock.close()


def _closed(sock: socket.socket) -> bool:
    """Whether the server hung up: its version line (and a refusal) first, then EOF."""
    sock.setblocking(False)
    try:
        while sock.recv(65536):
            pass
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_unknown_names_hint_only_at_what_the_caller_may_see(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    """A typo gets a did-you-mean, from the names the caller could list anyway."""
    assert "did you mean 'api'?" in door.ssh("config:list -a apu").stderr
    assert "did you mean 'cache'?" in door.ssh("services:info cahce").stderr
    gokku.ok("access:grant", "bob", "app:web", "--read")
    assert "did you mean 'web'?" in door.ssh("config:list -a wen", key=bob.path).stderr
    hidden = door.ssh("services:link dbb -a web", key=bob.path)
    assert "did you mean" not in hidden.stderr  # db exists, but bob may not see it
