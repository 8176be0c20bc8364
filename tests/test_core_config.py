"""Apps and their variables: exact round trips, Bash-compatible .env, refusals, concurrency."""

import base64
import json
import subprocess
from concurrent.futures import ThreadPoolExecutor

import pytest

HOSTILE_VALUES = {
    "SPACES": "a b  c ",
    "QUOTES": """it's "quoted" 'twice'""",
    "EQUALS": "a=b==c",
    "DOLLAR": "$HOME ${PATH} $(id) `id`",
    "NEWLINES": "line1\nline2\n\nline4\n",
    "UNICODE": "ünïcødé ✓ 日本",
    "BACKSLASH": "a\\b\\\\c\\n",
    "EMPTY": "",
    "GLOB": "* ? [a] ~",
}


@pytest.fixture
def app(gokku):
    gokku.ok("apps:create", "api")
    return "api"


def test_values_round_trip_exactly_through_get_list_json_and_bash(gokku, app):
    gokku.ok("config:set", "-a", app, *(f"{k}={v}" for k, v in HOSTILE_VALUES.items()))
    for key, value in HOSTILE_VALUES.items():
        assert gokku.ok("config:get", "-a", app, key).stdout == value + "\n"
    listed = json.loads(gokku.ok("config:list", "-a", app, "--format", "json").stdout)
    assert listed == HOSTILE_VALUES

    env_file = gokku.root / "apps" / app / "shared" / ".env"
    script = (
        f"set -a; . {env_file}; "
        "for k in " + " ".join(HOSTILE_VALUES) + '; do printf "%s\\0%s\\0" "$k" "${!k}"; done'
    )
    out = subprocess.run(["bash", "-c", script], capture_output=True, check=True).stdout
    parts = out.decode().split("\0")[:-1]
    assert dict(zip(parts[::2], parts[1::2], strict=True)) == HOSTILE_VALUES


def test_list_prints_env_file_lines_and_shell_exports(gokku, app):
    gokku.ok("config:set", "-a", app, "PLAIN=x", "MSG=a b")
    assert gokku.ok("config:list", "-a", app).stdout == "PLAIN=x\nMSG='a b'\n"
    shell = gokku.ok("config:list", "-a", app, "--format", "shell").stdout
    assert shell == "export PLAIN=x\nexport MSG='a b'\n"
    out = subprocess.run(["bash", "-c", shell + 'printf %s "$MSG"'], capture_output=True)
    assert out.stdout == b"a b"


def test_global_app_flag_and_env_selection(gokku, app):
    gokku.ok("-a", app, "config:set", "K=shared-value")
    gokku.ok("config:set", "-a", app, "--env", "production", "K=prod-value")
    assert gokku.ok("config:get", "-a", app, "K").stdout == "shared-value\n"
    assert gokku.ok("--app", app, "config:get", "--env", "production", "K").stdout == (
        "prod-value\n"
    )
    assert (gokku.root / "apps" / app / "production" / ".env").read_text() == "K=prod-value\n"


def test_unset_removes_only_named_keys(gokku, app):
    gokku.ok("config:set", "-a", app, "A=1", "B=2", "C=3")
    gokku.ok("config:unset", "-a", app, "A", "C")
    assert json.loads(gokku.ok("config:list", "-a", app, "--format", "json").stdout) == {"B": "2"}


def test_missing_key_fails_without_output(gokku, app):
    result = gokku("config:get", "-a", app, "NOPE")
    assert result.code == 1
    assert result.out == b""
    assert "NOPE is not set on app 'api'" in result.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["config:set", "-a", "api", "1BAD=x"], 2, "invalid variable name '1BAD'"),
        (["config:set", "-a", "api", "BAD KEY=x"], 2, "invalid variable name"),
        (["config:set", "-a", "api", "NOEQUALS"], 2, "expected KEY=VALUE"),
        (["config:set", "-a", "api"], 2, "missing argument"),
        (["config:set", "K=v"], 2, "missing -a APP"),
        (["config:set", "-a", "ghost", "K=v"], 1, "app 'ghost' does not exist"),
        (["config:set", "-a", "../etc", "K=v"], 2, "invalid app name '../etc'"),
        (["config:set", "-a", "api", "--env", "../x", "K=v"], 2, "invalid environment name"),
        (["config:get", "-a", "api"], 2, "missing argument"),
        (["config:get", "-a", "api", "A", "B"], 2, "one KEY"),
        (["config:list", "-a", "api", "--format", "xml"], 2, "unknown format 'xml'"),
        (["config:set", "-a", "api", "--bogus", "K=v"], 2, "unknown option --bogus"),
        (["config:set", "-a"], 2, "option -a needs a value"),
        (["config:set", "api"], 2, "missing argument (KEY=VALUE)"),
        (["config:set", "K=v", "api"], 2, "missing -a APP"),
        (["config:set", "ghost", "K=v"], 1, "app 'ghost' does not exist"),
        (["config:get", "api"], 2, "missing argument"),
        (["config:get", "api", "A", "B"], 2, "one KEY"),
        (["config:unset", "api"], 2, "missing argument"),
        (["config:show", "ghost"], 1, "app 'ghost' does not exist"),
        (["config:show", "api", "extra"], 2, "unexpected argument 'extra'"),
        (["config:export", "api", "--format", "json"], 2, "unknown option --format"),
        (["config:export"], 2, "missing -a APP"),
        (["config:set", "--encoded", "api", "A=eA==", "K=%%"], 2, "value of K is not base64"),
        (["config:set", "--encoded", "api", "K=/w=="], 2, "value of K is not base64 of UTF-8"),
        (["config:import", "api"], 2, "stdin holds no KEY=VALUE line"),
        (["config:import", "api", "extra"], 2, "unexpected argument 'extra'"),
        (["config:import", "Bad"], 2, "invalid app name 'Bad'"),
        (["apps:create", "Bad_Name"], 2, "invalid app name 'Bad_Name'"),
        (["apps:create", "api"], 1, "app 'api' already exists"),
        (["apps:destroy", "ghost"], 1, "app 'ghost' does not exist"),
        (["--format", "yaml", "apps:list"], 2, "unknown format 'yaml'"),
        (["--bogus", "apps:list"], 2, "unknown option --bogus"),
    ],
)
def test_bad_input_is_one_line_error_and_changes_nothing(gokku, app, args, code, message):
    gokku.ok("config:set", "-a", app, "KEEP=me")
    before = gokku.snapshot()
    result = gokku(*args)
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(" !     ")
    assert gokku.snapshot() == before


def test_fifty_concurrent_sets_of_different_keys_lose_nothing(gokku, app):
    def set_key(i: int):
        return gokku("config:set", "-a", app, f"KEY_{i}=value {i}")

    with ThreadPoolExecutor(max_workers=50) as pool:
        results = list(pool.map(set_key, range(50)))
    assert [r.code for r in results] == [0] * 50, [r.stderr for r in results if r.code]
    listed = json.loads(gokku.ok("config:list", "-a", app, "--format", "json").stdout)
    assert listed == {f"KEY_{i}": f"value {i}" for i in range(50)}


def test_env_file_is_private_and_written_whole(gokku, app):
    gokku.ok("config:set", "-a", app, "SECRET=s3cret")
    env_file = gokku.root / "apps" / app / "shared" / ".env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    leftovers = [p.name for p in env_file.parent.iterdir() if p.name != ".env"]
    assert leftovers == []


def test_reads_env_files_written_by_other_tools(gokku, app):
    env_file = gokku.root / "apps" / app / "shared" / ".env"
    env_file.write_text(
        '# written by hand\nexport A="x \\"y\\" \\$z"\nB=plain words\nC=\'single\'\n'
    )
    listed = json.loads(gokku.ok("config:list", "-a", app, "--format", "json").stdout)
    assert listed == {"A": 'x "y" $z', "B": "plain words", "C": "single"}


def test_rewrites_keep_comments_blank_lines_and_untouched_lines(gokku, app):
    env_file = gokku.root / "apps" / app / "shared" / ".env"
    env_file.write_text(
        "# database\nexport DB='x y'\n\nKEEP=\"as written\"\n# tail\nOLD=1\nOLD=2\nGONE=bye"
    )
    gokku.ok("config:set", "-a", app, "NEW=n", "OLD=3", "DB=x y")  # DB unchanged
    gokku.ok("config:unset", "-a", app, "GONE")
    assert env_file.read_text() == (
        "# database\nexport DB='x y'\n\nKEEP=\"as written\"\n# tail\nOLD=3\nNEW=n\n"
    )
    gokku.ok("config:set", "-a", app, "DB=z")
    assert env_file.read_text().startswith("# database\nexport DB=z\n\n")
    listed = json.loads(gokku.ok("config:list", "-a", app, "--format", "json").stdout)
    assert listed == {"DB": "z", "KEEP": "as written", "OLD": "3", "NEW": "n"}


def test_apps_list_and_destroy(gokku, app):
    gokku.ok("apps:create", "web")
    assert gokku.ok("apps:list").stdout == "api\nweb\n"
    assert json.loads(gokku.ok("apps:list", "--format", "json").stdout) == ["api", "web"]
    gokku.ok("apps:destroy", "web", "--force")
    assert gokku.ok("apps:list").stdout == "api\n"
    assert not (gokku.root / "apps" / "web").exists()


def test_empty_lists_say_so(gokku):
    assert gokku.ok("apps:list").stdout == "No apps\n"
    assert gokku.ok("services:list").stdout == "No services\n"
    assert json.loads(gokku.ok("services:list", "--format", "json").stdout) == []


def test_dokku_forms_take_the_app_first(gokku, app):
    gokku.ok("config:set", app, "MSG=a b", "N=1")
    gokku.ok("config:set", "K=v", "-a", app)  # a first word with "=" is a variable
    assert gokku.ok("config:get", app, "MSG").stdout == "a b\n"
    listed = gokku.ok("config:list", "-a", app).stdout
    assert listed == "MSG='a b'\nN=1\nK=v\n"
    assert gokku.ok("config:show", app).stdout == listed
    assert gokku.ok("-a", app, "config:show").stdout == listed
    shell = gokku.ok("config:list", app, "--format", "shell").stdout
    assert (
        gokku.ok("config:export", app).stdout
        == shell
        == ("export MSG='a b'\nexport N=1\nexport K=v\n")
    )
    out = subprocess.run(["bash", "-c", shell + 'printf %s "$MSG"'], capture_output=True)
    assert out.stdout == b"a b"
    gokku.ok("config:unset", app, "N", "K")
    assert json.loads(gokku.ok("config:show", app, "--format", "json").stdout) == {"MSG": "a b"}


def test_a_global_app_and_dokkus_app_first_word_agree(gokku, app):
    """``gokku -a api config:set api K=V`` (what the client sends from a checkout whose
    git remote names the app) is the Dokku form, not a variable called ``api``."""
    gokku.ok("-a", app, "config:set", app, "K=v")
    assert gokku.ok("-a", app, "config:get", app, "K").stdout == "v\n"
    assert gokku.ok("config:get", "-a", app, app, "K").stdout == "v\n"
    assert gokku.ok("-a", app, "config:show", app).stdout == "K=v\n"
    gokku.ok("-a", app, "config:unset", app, "K")
    assert gokku.ok("config:show", app).stdout == ""
    other = gokku("-a", app, "config:set", "web", "K=v")  # "web" is no variable
    assert other.code != 0 and "web" in other.stderr and other.stderr.count("\n") == 1
    assert gokku.ok("config:show", app).stdout == ""


def test_encoded_values_are_base64_as_in_dokku(gokku, app):
    encoded = {
        key: base64.b64encode(value.encode()).decode() for key, value in HOSTILE_VALUES.items()
    }
    gokku.ok("config:set", "--encoded", app, *(f"{k}={v}" for k, v in encoded.items()))
    assert json.loads(gokku.ok("config:list", app, "--format", "json").stdout) == HOSTILE_VALUES
    long = "x" * 200
    wrapped = subprocess.run(["base64"], input=long.encode(), capture_output=True).stdout.decode()
    assert "\n" in wrapped.strip()  # base64 breaks lines at 76 columns: still one value
    gokku.ok("config:set", app, "--encoded", f"LONG={wrapped}")
    assert gokku.ok("config:get", app, "LONG").stdout == long + "\n"


def test_import_sets_every_variable_of_an_env_file(gokku, app):
    gokku.ok("config:set", app, "KEEP=me", "A=old")
    text = (
        "# exported by another tool\n"
        'export A="new \\"quoted\\""\n'
        "B='multi\nline'\n"
        "\n"
        "C=plain words\n"
    )
    result = gokku.ok("config:import", app, input=text.encode())
    assert result.stderr == "-----> Set A, B, C on api (shared)\n"
    values = json.loads(gokku.ok("config:list", app, "--format", "json").stdout)
    assert values == {"KEEP": "me", "A": 'new "quoted"', "B": "multi\nline", "C": "plain words"}


def test_import_reads_back_what_list_prints(gokku, app):
    gokku.ok("apps:create", "web")
    gokku.ok("config:set", app, *(f"{k}={v}" for k, v in HOSTILE_VALUES.items()))
    dotenv = gokku.ok("config:list", app).out
    gokku.ok("config:import", "web", input=dotenv)
    assert json.loads(gokku.ok("config:list", "web", "--format", "json").stdout) == HOSTILE_VALUES


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"A=1\nB 2\n", "stdin: line 2 is not KEY=VALUE; nothing was changed"),
        (b"A=1\n\nB='open\nstill open\n", "stdin: unterminated quote on line 3"),
        (b"1A=x\n", "stdin: line 1 is not KEY=VALUE"),
        (b"A=\xff\n", "stdin: a .env file must be UTF-8 text"),
        (b"# nothing but a comment\n", "stdin holds no KEY=VALUE line"),
    ],
)
def test_import_refuses_a_bad_file_whole(gokku, app, data, message):
    gokku.ok("config:set", app, "KEEP=me")
    before = gokku.snapshot()
    result = gokku("config:import", app, input=data)
    assert result.code == 2
    assert result.stderr.startswith(f" !     {message}") and result.stderr.count("\n") == 1
    assert gokku.snapshot() == before
