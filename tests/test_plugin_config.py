"""A plugin's settings (``config:`` in plugin.yml): set by admins through both doors,
checked against the declaration, kept owner-only, handed to the plugin's real scripts as
``GOKKU_CONFIG_*``, and secrets kept out of listings and the audit log."""

import json
import stat
from pathlib import Path

import pytest
from conftest import Gokku, write_plugin
from sshkit import *  # noqa: F403 - fixtures
from sshkit import Door, KeyPair, make_key

SECRET = "tok-9f8e7d6c-s3cret"
# A secret whose name and shape give nothing away: only its declaration says it is one.
LICENSE = "lic-4d3c2b1a-plain"
MANIFEST = """\
version: 1.0.0
commands:
  show: {access: any}
config:
  API_URL: {default: "http://default.example", description: where it calls}
  TOKEN: {secret: true, description: the API token}
  LICENSE: {secret: true}
  RETRIES: {default: 3}
  VERBOSE: {default: false}
"""
# show prints what the script got; a plugin reads its settings only from there.
SHOW = 'env | grep "^GOKKU_CONFIG_" | sort\n'
DEFAULTS = (
    "GOKKU_CONFIG_API_URL=http://default.example\n"
    "GOKKU_CONFIG_RETRIES=3\n"
    "GOKKU_CONFIG_VERBOSE=false\n"
)


def add_cfg(gokku: Gokku, tmp_path: Path, manifest: str = MANIFEST) -> Path:
    tree = write_plugin(tmp_path / "src" / "cfg", commands={"commands/show": SHOW})
    (tree / "plugin.yml").write_text(manifest)
    gokku.ok("plugins:add", str(tree))
    return tree


@pytest.fixture
def bob(gokku: Gokku, keydir: Path) -> KeyPair:
    """A member key, with write access to everything a member can be granted here."""
    key = make_key(keydir, "bob")
    gokku.ok("ssh-keys:add", "bob", input=key.public.encode())
    return key


def test_settings_reach_the_scripts_and_secrets_stay_out_of_sight(
    door: Door, gokku: Gokku, bob: KeyPair, tmp_path: Path
) -> None:
    add_cfg(gokku, tmp_path)
    assert door.ssh("cfg:show").stdout == DEFAULTS

    done = door.ssh(
        f"plugins:config:set cfg TOKEN={SECRET} API_URL=http://api.example LICENSE={LICENSE}"
    )
    assert (done.code, done.stdout) == (0, "")
    assert door.ssh("cfg:show").stdout == (
        "GOKKU_CONFIG_API_URL=http://api.example\n"
        f"GOKKU_CONFIG_LICENSE={LICENSE}\n"
        "GOKKU_CONFIG_RETRIES=3\n"
        f"GOKKU_CONFIG_TOKEN={SECRET}\n"
        "GOKKU_CONFIG_VERBOSE=false\n"
    )
    # A member's command runs with the same settings; a secret one never reaches the
    # member, as a service's password does not.
    as_bob = door.ssh("cfg:show", key=bob.path)
    assert "GOKKU_CONFIG_TOKEN=<redacted>\n" in as_bob.stdout and SECRET not in as_bob.stdout
    assert "GOKKU_CONFIG_LICENSE=<redacted>\n" in as_bob.stdout and LICENSE not in as_bob.stdout

    listing = door.ssh("plugins:config cfg").stdout
    assert listing.splitlines() == [
        "KEY      VALUE               FROM     DESCRIPTION",
        "API_URL  http://api.example  set      where it calls",
        "LICENSE  <redacted>          set",
        "RETRIES  3                   default",
        "TOKEN    <redacted>          set      the API token",
        "VERBOSE  false               default",
    ]
    shown = json.loads(door.ssh("plugins:config cfg --format json").stdout)
    assert {r["key"]: r["value"] for r in shown}["TOKEN"] == "<redacted>"

    audit = (gokku.root / "log" / "audit.log").read_bytes()
    assert SECRET.encode() not in audit and LICENSE.encode() not in audit
    line = next(e for e in door.audit() if e["argv"][:1] == ["plugins:config:set"])
    assert line["argv"] == [
        "plugins:config:set",
        "cfg",
        "TOKEN=<redacted>",
        "API_URL=<redacted>",
        "LICENSE=<redacted>",
    ]

    stored = gokku.root / "plugin-settings" / "cfg.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
    assert SECRET in stored.read_text()

    unset = door.ssh("plugins:config:unset cfg TOKEN API_URL LICENSE")
    assert unset.code == 0, unset.stderr
    assert door.ssh("cfg:show").stdout == DEFAULTS
    assert SECRET not in stored.read_text()


def test_members_may_not_read_or_change_settings(
    door: Door, gokku: Gokku, bob: KeyPair, tmp_path: Path
) -> None:
    add_cfg(gokku, tmp_path)
    gokku.ok("plugins:config:set", "cfg", f"TOKEN={SECRET}")
    before = gokku.snapshot()
    for command in (
        "plugins:config cfg",
        "plugins:config:set cfg TOKEN=mine",
        "plugins:config:unset cfg TOKEN",
    ):
        result = door.ssh(command, key=bob.path)
        verb = command.split()[0]
        assert (result.code, result.stdout, result.stderr) == (
            1,
            "",
            f" !     bob may not run {verb} (admins only): ask an admin\n",
        )
    changed = {k for k, v in gokku.snapshot().items() if before.get(k) != v}
    assert changed == {"log/audit.log"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["cfg", "api_url=x"], "plugin 'cfg' has no setting 'api_url'; did you mean 'API_URL'?"),
        (["cfg", "TOKN=x"], "plugin 'cfg' has no setting 'TOKN'; did you mean 'TOKEN'?"),
        (
            ["cfg", "COLOUR=red"],
            "plugin 'cfg' has no setting 'COLOUR' "
            "(it has API_URL, LICENSE, RETRIES, TOKEN, VERBOSE)",
        ),
        (["cfg", "TOKEN=ok", "NOPE=x"], "plugin 'cfg' has no setting 'NOPE' (it has"),
        (["cfg", "TOKEN"], "expected KEY=VALUE, got 'TOKEN'"),
        (["cfg"], "missing argument (KEY=VALUE)"),
        (["nosuch", "TOKEN=x"], "plugin 'nosuch' is not installed"),
    ],
)
def test_a_bad_setting_is_one_line_and_changes_nothing(
    gokku: Gokku, tmp_path: Path, args: list[str], message: str
) -> None:
    add_cfg(gokku, tmp_path)
    gokku.ok("plugins:config:set", "cfg", "RETRIES=5")
    before = gokku.snapshot()
    result = gokku("plugins:config:set", *args)
    assert result.code in (1, 2) and result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(f" !     {message}"), line
    assert gokku.snapshot() == before


def test_unset_checks_its_keys_and_a_plugin_without_settings_says_so(
    gokku: Gokku, tmp_path: Path
) -> None:
    add_cfg(gokku, tmp_path)
    gokku.ok("plugins:config:set", "cfg", "RETRIES=5")
    before = gokku.snapshot()
    result = gokku("plugins:config:unset", "cfg", "RETRIES", "RETRYS")
    assert (result.code, result.stderr) == (
        2,
        " !     plugin 'cfg' has no setting 'RETRYS'; did you mean 'RETRIES'?\n",
    )
    assert gokku.snapshot() == before  # RETRIES was not unset either

    plain = write_plugin(tmp_path / "src" / "plain")
    gokku.ok("plugins:add", str(plain))
    assert gokku.ok("plugins:config", "plain").stdout == "plugin plain declares no settings\n"
    refused = gokku("plugins:config:set", "plain", "X=1")
    assert refused.stderr == (
        " !     plugin 'plain' declares no settings (config: in its plugin.yml)\n"
    )


def test_values_can_come_on_stdin(gokku: Gokku, tmp_path: Path) -> None:
    """A secret on a command line is in the shell's history and in ps: --stdin keeps it
    out, as config:set --stdin does."""
    add_cfg(gokku, tmp_path)
    gokku.ok("plugins:config:set", "cfg", "--stdin", input=f"TOKEN={SECRET} $HOME\0".encode())
    assert f"GOKKU_CONFIG_TOKEN={SECRET} $HOME\n" in gokku.ok("cfg:show").stdout


def test_settings_survive_an_update_and_go_with_the_plugin(gokku: Gokku, tmp_path: Path) -> None:
    """An update replaces the plugin's tree, not its settings; a remove takes them, so the
    name installed again starts clean."""
    tree = add_cfg(gokku, tmp_path)
    gokku.ok("plugins:config:set", "cfg", f"TOKEN={SECRET}", "RETRIES=9")
    (tree / "plugin.yml").write_text(MANIFEST.replace("{default: 3}", "{default: 4}"))
    gokku.ok("plugins:update", "cfg")
    assert gokku.ok("cfg:show").stdout == (
        "GOKKU_CONFIG_API_URL=http://default.example\n"
        "GOKKU_CONFIG_RETRIES=9\n"
        f"GOKKU_CONFIG_TOKEN={SECRET}\n"
        "GOKKU_CONFIG_VERBOSE=false\n"
    )
    stored = gokku.root / "plugin-settings" / "cfg.json"
    kept = stored.read_bytes()
    gokku.ok("plugins:remove", "cfg")
    assert not stored.exists()
    stored.write_bytes(kept)  # as a remove cut off before its last step leaves it
    gokku.ok("plugins:add", str(tree))
    assert gokku.ok("cfg:show").stdout == DEFAULTS.replace("=3", "=4")


BAD_DECLARATIONS = {
    "config: [API_URL]": "plugin.yml: 'config' must map setting names to {default, ...}",
    "config: {api_url: {}}": "plugin.yml: config key 'api_url' must be uppercase letters",
    # YAML 1.1 reads ON as true: the key is not the word the author meant.
    "config: {ON: {}}": "plugin.yml: config key 'True' must be uppercase letters",
    "config: {URL: http}": "plugin.yml: config URL: must be a mapping ({default: ...})",
    "config: {URL: {default: [a, b]}}": "plugin.yml: config URL: default must be a single value",
    "config: {URL: {secret: yes-please}}": "plugin.yml: config URL: secret must be true or false",
    "config: {URL: {description: [x]}}": "plugin.yml: config URL: description must be text",
    "config: {URL: {dflt: x}}": "plugin.yml: config URL has unknown keys ['dflt']",
}


@pytest.mark.parametrize("declaration", sorted(BAD_DECLARATIONS))
def test_a_bad_config_declaration_is_one_line_and_installs_nothing(
    gokku: Gokku, tmp_path: Path, declaration: str
) -> None:
    tree = write_plugin(tmp_path / "src" / "cfg")
    (tree / "plugin.yml").write_text(declaration + "\n")
    report = gokku("plugins:validate", str(tree))
    assert report.code == 1
    assert "\nerror: " + BAD_DECLARATIONS[declaration] in report.stdout, report.stdout
    added = gokku("plugins:add", str(tree))
    assert added.code == 1
    (line,) = [ln for ln in added.stderr.splitlines() if ln.startswith(" !")]
    assert BAD_DECLARATIONS[declaration] in line
    assert not (gokku.root / "plugins" / "cfg").exists()
