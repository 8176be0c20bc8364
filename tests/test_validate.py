"""``plugins:validate`` and ``plugins:add`` on scripts that name /opt/gokku: a use that
ignores GOKKU_ROOT is flagged (and refused under another root unless --force); a default
that GOKKU_ROOT overrides, a comment or a printed help text is not."""

from pathlib import Path

import pytest
from conftest import Gokku, write_plugin

HELP_TEXT = """\
usage() {
  cat <<EOF
Backups go to /opt/gokku/backups unless GOKKU_ROOT says otherwise.
EOF
}
"""

NOT_USES = {
    "root default": 'ROOT="${GOKKU_ROOT:-/opt/gokku}"\necho "$ROOT/services/$1"\n',
    "dir default": "ROOT=${GOKKU_DIR:-/opt/gokku}\n",
    "assigned default": ': "${GOKKU_ROOT:=/opt/gokku}"\n',
    "nested default": 'cd "${GOKKU_ROOT:-${GOKKU_DIR:-/opt/gokku}}"\n',
    "default in a substitution": 'n=$(ls "${GOKKU_ROOT:-/opt/gokku}/services" | wc -l)\n',
    "default in a written here-doc": (
        'cat >"$1.conf" <<EOF\ndir ${GOKKU_ROOT:-/opt/gokku}/services/$1\nEOF\n'
    ),
    "comment": "# see /opt/gokku\n",
    "comment after code": "echo 'done' # state is in /opt/gokku\n",
    "printed help": HELP_TEXT,
    "printed help to stderr": "cat <<'EOF' >&2\nsee /opt/gokku\nEOF\n",
    "another directory": "ls /opt/gokku-old\n",
}

USES = {
    "official helpers idiom": "source /opt/gokku/scripts/plugin-helpers.sh\n",
    "rm": 'rm -rf "/opt/gokku/services/$1"\n',
    "quoted": "ROOT='/opt/gokku'\n",
    "a hash inside quotes": 'echo "see # /opt/gokku"\n',
    "a hash inside a word": "echo a#/opt/gokku\n",
    "default of another variable": "ROOT=${MY_ROOT:-/opt/gokku}\n",
    "alternative value": "ROOT=${GOKKU_ROOT:+/opt/gokku}\n",
    "substitution": "n=$(ls /opt/gokku/services)\n",
    "backquotes": "n=`ls /opt/gokku/services`\n",
    "here-doc written to a file": 'cat >"$1.conf" <<EOF\ndir /opt/gokku/services/$1\nEOF\n',
    "here-doc captured": "conf=$(cat <<EOF\ndir /opt/gokku/services/$1\nEOF\n)\n",
    "here-doc run by bash": "bash <<'EOF'\nrm -rf /opt/gokku/cache\nEOF\n",
    "code after a printed help": HELP_TEXT + 'rm -rf "/opt/gokku/services/$1"\n',
    "after a comment line": "# cleanup\nrm -rf /opt/gokku/tmp\n",
}


def _plugin(tmp_path: Path, body: str) -> Path:
    return write_plugin(tmp_path / "src" / "p", namespace="p", uninstall=body)


@pytest.mark.parametrize("body", NOT_USES.values(), ids=NOT_USES.keys())
def test_a_default_a_comment_or_a_help_text_is_not_a_hard_coded_root(
    gokku: Gokku, tmp_path: Path, body: str
) -> None:
    tree = _plugin(tmp_path, body)
    assert gokku.ok("plugins:validate", str(tree)).stdout == (
        f"ok: {tree} follows the plugin contract\n"
    )
    added = gokku.ok("plugins:add", str(tree), "--name", "p")
    assert "hard-code" not in added.stderr


@pytest.mark.parametrize("body", USES.values(), ids=USES.keys())
def test_a_use_that_ignores_gokku_root_is_flagged_and_refused_elsewhere(
    gokku: Gokku, tmp_path: Path, body: str
) -> None:
    tree = _plugin(tmp_path, body)
    report = gokku.ok("plugins:validate", str(tree))
    assert report.stdout == (
        "warning: uninstall hard-code /opt/gokku: whatever GOKKU_ROOT is, they read and "
        "remove files there\n"
    )
    refused = gokku("plugins:add", str(tree), "--name", "p")
    assert refused.code == 1 and refused.stderr.count(" !     ") == 1
    assert "refusing p: uninstall hard-code /opt/gokku" in refused.stderr
    assert not (gokku.root / "plugins" / "p").exists()


def test_the_default_idiom_works_under_another_root(gokku: Gokku, tmp_path: Path) -> None:
    """What makes it no hard-coding: under GOKKU_ROOT the script's files go there."""
    install = 'ROOT="${GOKKU_ROOT:-/opt/gokku}"\necho made >"$ROOT/services/$1/made"\n'
    tree = write_plugin(tmp_path / "src" / "p", install=install)
    gokku.ok("plugins:add", str(tree), "--name", "p")
    gokku.ok("services:create", "p", "--name", "s")
    assert (gokku.root / "services" / "s" / "made").read_text() == "made\n"


def test_a_readme_at_the_root_is_not_read_as_a_script(gokku: Gokku, tmp_path: Path) -> None:
    tree = _plugin(tmp_path, 'echo "uninstalled $1"\n')
    (tree / "README.md").write_text("Install it: it keeps its files in /opt/gokku.\n")
    assert gokku.ok("plugins:validate", str(tree)).stdout.startswith("ok: ")
    (tree / "common.sh").write_text("rm -rf /opt/gokku/x\n")
    report = gokku.ok("plugins:validate", str(tree)).stdout
    assert "warning: common.sh hard-code /opt/gokku" in report
