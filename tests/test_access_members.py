"""A member key tried as an attacker would, through both doors: ``-a APP`` decided before
any script runs, secrets masked for a key that may only read, and names the key may not
see answered as if they did not exist."""

import glob
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from bundled_support import reachable_root
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, make_key

from gokku import redact

PASSWORD = "pw-bsvc-s3cretvalue"
# bld: a plugin whose set-port writes the app named by -a, as deploy plugins do, and whose
# info prints its service's secrets in every shape a plugin might, declaring one field.
BLD = {
    "commands/set-port": 'echo "setting $1"\nset_app_env "$GOKKU_APP" shared PORT "$2"\n',
    "commands/app": 'echo "app=${GOKKU_APP-none} access=$GOKKU_ACCESS"\n',
    # Who runs it (on the embedded door the session's process, once it became the
    # script, is the zygote's child), then secrets in pieces, the last with no newline.
    "commands/pieces": (
        'echo "parent=$(cat /proc/$PPID/comm)"\n'
        'pw="pw-$1-s3cretvalue"\n'
        'printf "first %s\\n" "$pw"\n'
        'printf "err %s\\n" "$pw" >&2\n'
        'printf "last %s" "$pw"\n'
    ),
    "commands/info": (
        'pw="pw-$1-s3cretvalue"\n'
        "cat <<EOF\n"
        "Status: running\n"
        "URL: bld://u:$pw@127.0.0.1:1/x\n"
        "Handle: h-9f8e7d6c\n"
        "password = $pw\n"
        "note: $pw is here\n"
        "Other: fine\n"
        "EOF\n"
        'echo "debug $pw" >&2\n'
    ),
}
BLD_INSTALL = (
    'update_service_config "$1" password "pw-$1-s3cretvalue"\n'
    'set_service_env "$1" BLD_URL "bld://u:pw-$1-s3cretvalue@127.0.0.1:1/x"\n'
)
BLD_MANIFEST = (
    "commands:\n  app: {access: any}\n  info: {secret: [Handle]}\n  pieces: {access: read}\n"
)
INFO = (
    "Status: running\n"
    "URL: bld://u:{pw}@127.0.0.1:1/x\n"
    "Handle: {handle}\n"
    "password = {pw}\n"
    "note: {pw} is here\n"
    "Other: fine\n"
)


@pytest.fixture
def bob(gokku: Gokku, keydir: Path) -> KeyPair:
    key = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=key.public.encode())
    return key


@pytest.fixture
def estate(gokku: Gokku, bob: KeyPair, tmp_path: Path) -> None:
    """bob may write app api and read service bsvc (linked to api and secretapp);
    secretapp and secretsvc exist, and bob has no grant on them."""
    tree = write_plugin(tmp_path / "src" / "bld", commands=BLD, install=BLD_INSTALL)
    (tree / "plugin.yml").write_text(BLD_MANIFEST)
    gokku.ok("plugins:add", str(tree))
    for app in ("api", "secretapp"):
        gokku.ok("apps:create", app)
    for service in ("bsvc", "secretsvc"):
        gokku.ok("services:create", "bld", "--name", service)
    gokku.ok("services:link", "bsvc", "-a", "api")
    gokku.ok("services:link", "bsvc", "-a", "secretapp")
    gokku.ok("access:grant", "bob", "app:api")
    gokku.ok("access:grant", "bob", "service:bsvc", "--read")


def _changed(gokku: Gokku, before: dict[str, bytes]) -> set[str]:
    return {k for k, v in gokku.snapshot().items() if before.get(k) != v}


def test_dash_a_is_access_checked_before_the_script_runs(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    """The reproduction: bob's plugin command writes $GOKKU_APP's .env; naming an app bob
    may not write (or one that does not exist) runs nothing, and says the same."""
    gokku.ok("access:grant", "bob", "service:bsvc")  # the service is bob's to change
    before = gokku.snapshot()
    for app in ("secretapp", "nosuchapp"):
        result = door.ssh(f"-a {app} bld:set-port bsvc 9999", key=bob.path)
        assert (result.code, result.stdout, result.stderr) == (
            1,
            "",
            f" !     bob may not write app '{app}': ask an admin for access:grant bob app:{app}\n",
        )
        # A command anyone may run still needs the app it names to be readable.
        shown = door.ssh(f"-a {app} bld:app", key=bob.path)
        assert (shown.code, shown.stdout) == (1, "")
        assert shown.stderr == f" !     bob may not read app '{app}': ask an admin for " + (
            f"access:grant bob app:{app} --read\n"
        )
    assert _changed(gokku, before) == {"log/audit.log"}
    assert "PORT" not in gokku.ok("config:list", "secretapp", "--format", "json").stdout

    done = door.ssh("-a api bld:set-port bsvc 9999", key=bob.path)
    assert (done.code, done.stdout) == (0, "setting bsvc\n")
    assert gokku.ok("config:get", "-a", "api", "PORT").stdout == "9999\n"
    shown = door.ssh("-a api bld:app", key=bob.path)
    assert shown.stdout == "app=api access=read\n"  # bob may not write a service here
    assert door.ssh("-a api bld:app").stdout == "app=api access=write\n"  # alice: admin


HOSTILE_APPS = ("../../../etc/x\ny", "api\n", "a" * 100_000, "", "API", "-x")


def test_hostile_dash_a_is_refused_in_one_line_by_every_door(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    before = gokku.snapshot()
    for key in (bob.path, None):  # a member, and an admin too
        for app in HOSTILE_APPS:
            for command in ("bld:set-port bsvc 1", "config:get K"):
                result = door.ssh(f"-a {shlex.quote(app)} {command}", key=key)
                assert (result.code, result.stdout) == (2, ""), (app[:20], command)
                (line,) = result.stderr.splitlines()
                assert line.startswith(" !     invalid app name ") and len(line) < 300
    assert _changed(gokku, before) == {"log/audit.log"}
    # The local CLI refuses them the same way.
    for app in HOSTILE_APPS:
        local = gokku("-a", app, "bld:app")
        assert (local.code, local.stdout, local.stderr.count("\n")) == (2, "", 1)


def test_a_nul_in_dash_a_is_refused_on_the_embedded_door(
    server: int, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    """OpenSSH's client cannot send a NUL in a command; paramiko can: one line, exit 2,
    nothing run (no argument can carry a NUL to a script)."""
    transport = paramiko.Transport(("127.0.0.1", server))
    transport.connect(username="gokku", pkey=paramiko.Ed25519Key.from_private_key_file(bob.path))
    before = gokku.snapshot()
    try:
        for command in ("-a 'api\0../x' bld:set-port bsvc 1", "bld:set-port bsvc '1\0'"):
            channel = transport.open_session()
            channel.exec_command(command)
            out, err = channel.makefile("rb").read(), channel.makefile_stderr("rb").read()
            assert (channel.recv_exit_status(), out) == (2, b"")
            assert err == b" !     a command cannot hold a NUL byte\n"
    finally:
        transport.close()
    assert _changed(gokku, before) <= {"log/audit.log"}


def test_a_key_that_may_only_read_never_sees_a_secret(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    """bld declares one field secret and forgets the rest: none of it reaches bob."""
    masked = INFO.format(pw="<redacted>", handle="<redacted>")
    for command in ("bld:info bsvc", "services:info bsvc"):
        result = door.ssh(command, key=bob.path)
        assert (result.code, result.stdout, result.stderr) == (0, masked, "debug <redacted>\n")
    plain = INFO.format(pw=PASSWORD, handle="h-9f8e7d6c")
    assert door.ssh("bld:info bsvc").stdout == plain  # alice: admin
    gokku.ok("access:grant", "bob", "service:bsvc")
    assert door.ssh("services:info bsvc", key=bob.path).stdout == plain
    assert PASSWORD.encode() not in (gokku.root / "log" / "audit.log").read_bytes()


def test_a_read_callers_script_is_masked_without_a_process_of_ours_in_between(
    door: Door, bob: KeyPair, estate: None
) -> None:
    """On the embedded door the session's process becomes the script for a caller who
    may only read, as for any other (a held session costs no Python process): the
    server's worker masks what the script writes, from its first byte to a last line
    with no newline, on stdout and stderr alike."""
    result = door.ssh("bld:pieces bsvc", key=bob.path)
    assert result.code == 0, result.stderr
    first, rest = result.stdout.split("\n", 1)
    assert rest == "first <redacted>\nlast <redacted>"
    assert result.stderr == "err <redacted>\n"
    if door.kind == "embedded":
        assert first == "parent=gokku-zygote"


def test_names_a_member_may_not_see_answer_as_missing_ones_do(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None, tmp_path: Path
) -> None:
    """Each command is tried with a name that exists but bob may not see and with one
    that does not exist: exit code, output and refusal are the same but for the name."""
    commands = (
        "bld:info {s}",
        "bld:set-port {s} 1",
        "services:info {s}",
        "services:logs {s}",
        "bld:app {s}",
        "-a {a} bld:app",
        "-a {a} version",
        "config:get {a} K",
        "services:link bsvc -a {a}",
        "services:link {s} -a api",
        "services:unlink {s} -a api",
        "services:promote {s} -a api",
        "services:start {s}",
        "bld:link {s} api",
        "bld:unlink bsvc {a}",
        "bld:list --format json",
        "config:set {a} K=v",
        "config:export {a}",
        "apps:deploy {a}",
        "apps:deploys {a}",
        "apps:deploy-log {a}",
        "apps:deploy-set {a} wait 5",
    )
    for template in commands:
        seen = []
        for app, service in (("secretapp", "secretsvc"), ("nosuchapp", "nosuchsvc")):
            result = door.ssh(template.format(a=app, s=service), key=bob.path)
            hide = (result.stdout + result.stderr).replace(app, "NAME").replace(service, "NAME")
            seen.append((result.code, hide))
        assert seen[0] == seen[1], (template, seen)

    ssh = shlex.join(door.ssh_argv(key=bob.path)[:-1])
    user = door.ssh_argv()[-1]
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t"]
    work = tmp_path / "work"
    subprocess.run([*git, "init", "-q", "-b", "main", str(work)], check=True)
    subprocess.run([*git, "-C", str(work), "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    gokku.ok("access:grant", "bob", "app:secretapp")  # bob pushes it, so that it has a repo
    env = {**os.environ, "GIT_SSH_COMMAND": ssh}
    pushed = subprocess.run([*git, "-C", str(work), "push", f"{user}:secretapp", "main"], env=env)
    assert pushed.returncode == 0
    gokku.ok("access:revoke", "bob", "app:secretapp")
    for verb in (["push", "{}", "main"], ["ls-remote", "{}"], ["fetch", "{}"]):
        answers = []
        for app in ("secretapp", "nosuchapp"):
            argv = [word.replace("{}", f"{user}:{app}") for word in verb]
            result = subprocess.run(
                [*git, "-C", str(work), *argv], env=env, capture_output=True, text=True
            )
            answers.append((result.returncode, result.stderr.replace(app, "NAME")))
        assert answers[0] == answers[1], verb
        assert answers[0][0] != 0 and "bob may not " in answers[0][1]


def test_services_list_shows_a_member_only_the_apps_it_may_read(
    door: Door, gokku: Gokku, bob: KeyPair, estate: None
) -> None:
    listed = json.loads(door.ssh("services:list --format json", key=bob.path).stdout)
    assert [(s["name"], s["linked_apps"]) for s in listed] == [("bsvc", ["api"])]
    table = door.ssh("services:list", key=bob.path).stdout
    assert "secretapp" not in table and "api" in table
    everything = json.loads(door.ssh("services:list --format json").stdout)
    assert [s["linked_apps"] for s in everything] == [["api", "secretapp"], []]


def test_the_masker_finds_secrets_in_their_shapes() -> None:
    """What the door tests above rely on, one shape at a time (and what it leaves)."""
    record = {
        "config": {"password": "hunter22", "port": "5433", "user": "postgres"},
        "env": {"X_URL": "redis://:tok-777@127.0.0.1:6380", "X_HOST": "127.0.0.1"},
    }
    mask = redact.masker(record, ["DSN"])
    cases = {
        b"DSN:   postgres://postgres:hunter22@127.0.0.1:5433/db\r\n": b"DSN:   <redacted>\r\n",
        b"postgres://u:other@h/db\n": b"postgres://u:<redacted>@h/db\n",
        b"redis://:tok-777@h\n": b"redis://:<redacted>@h\n",
        b"hunter22 and tok-777\n": b"<redacted> and <redacted>\n",
        b'{"password": "x1", "api_key": "y2"}\n': (
            b'{"password": "<redacted>", "api_key": "<redacted>"}\n'
        ),
        b"PGPASSWORD=abc TOKEN: def\n": b"PGPASSWORD=<redacted> TOKEN: <redacted>\n",
        b"Port: 5433 user postgres on 127.0.0.1\n": b"Port: 5433 user postgres on 127.0.0.1\n",
        b"dsn is not a field here\n": b"dsn is not a field here\n",
    }
    for line, expected in cases.items():
        assert mask(line) == expected, line


@pytest.mark.skipif(
    not (glob.glob("/usr/lib/postgresql/*/bin/initdb") and shutil.which("redis-server")),
    reason="PostgreSQL and Redis servers are not installed",
)
class TestRealServices:
    """The bundled plugins with real PostgreSQL and Redis servers (see bundled_support),
    and a backup key that may read them."""

    @pytest.fixture
    def reachable(self) -> Iterator[Gokku]:
        with reachable_root() as gokku:
            yield gokku

    # The door fixtures build on these two: a root the servers' users can reach.
    @pytest.fixture
    def gokku(self, reachable: Gokku) -> Gokku:
        return reachable

    @pytest.fixture
    def base_env(self, reachable: Gokku) -> dict[str, str]:
        return reachable.env

    def test_a_read_grant_never_sees_a_password_and_hidden_services_look_missing(
        self, door: Door, gokku: Gokku, keydir: Path
    ) -> None:
        for plugin in ("postgres", "redis"):
            gokku.ok("plugins:add", plugin)
        gokku.ok("services:create", "postgres", "--name", "db")
        for name in ("cache", "secretcache"):
            gokku.ok("services:create", "redis", "--name", name)
        backup = make_key(keydir, "backup")
        gokku.ok("ssh-keys:add", "backup", input=backup.public.encode())
        for service in ("db", "cache"):
            gokku.ok("access:grant", "backup", f"service:{service}", "--read")

        dsns = {}
        for service, namespace in (("db", "pg"), ("cache", "redis")):
            password = gokku.ok("services:config-get", service, "password").stdout.strip()
            dsn = dsns[service] = gokku.ok(f"{namespace}:info", service, "--dsn").stdout
            assert f":{password}@" in dsn
            for command in (f"{namespace}:info {service} --dsn", f"services:info {service} --dsn"):
                seen = door.ssh(command, key=backup.path)
                assert (seen.code, seen.stdout, seen.stderr) == (
                    0,
                    dsn.replace(password, "<redacted>"),
                    "",
                ), command
            info = door.ssh(f"{namespace}:info {service}", key=backup.path)
            assert info.code == 0 and password not in info.stdout + info.stderr
            assert "DSN:          <redacted>\n" in info.stdout
            port = gokku.ok("services:config-get", service, "port").stdout.strip()
            assert f"Port:         {port} (127.0.0.1)\n" in info.stdout  # the rest is shown
            assert door.ssh(f"{namespace}:info {service} --dsn").stdout == dsn  # alice: admin
        # A dump is what a read grant is for: it arrives as the server wrote it.
        assert door.ssh("pg:export db", key=backup.path).out.startswith(b"PGDMP")
        gokku.ok("access:grant", "backup", "service:cache")  # write: the password is its own
        assert door.ssh("redis:info cache --dsn", key=backup.path).stdout == dsns["cache"]

        answers = []
        for name in ("secretcache", "nosuchcache"):  # as close to what backup may see
            result = door.ssh(f"redis:info {name}", key=backup.path)
            answers.append((result.code, result.stdout, result.stderr.replace(name, "NAME")))
        assert answers[0] == answers[1]
        assert answers[0] == (
            1,
            "",
            " !     backup may not read service 'NAME': ask an admin for "
            "access:grant backup service:NAME --read; did you mean 'cache'?\n",
        )


def test_a_secret_declaration_that_is_not_a_list_of_fields_is_refused(
    gokku: Gokku, tmp_path: Path
) -> None:
    for bad in ("DSN", "[1]", "['DSN:']", "['']"):
        tree = write_plugin(tmp_path / "src" / "bad")
        (tree / "plugin.yml").write_text(f"commands:\n  info: {{secret: {bad}}}\n")
        before = gokku.snapshot()
        result = gokku("--quiet", "plugins:add", str(tree))
        assert (result.code, result.stderr.count("\n")) == (1, 1), bad
        assert "secret must be a list of field names" in result.stderr
        assert gokku.snapshot() == before
