"""Checks shared by the plugin manager tests: a refusal is one line, and leaves nothing."""

from conftest import write_plugin


def error_line(result) -> str:
    """The single ``!`` line a refusal prints; no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith(" !")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def plugin_entries(gokku) -> list[str]:
    """Everything in plugins/, dot entries included: staging leftovers would show here."""
    folder = gokku.root / "plugins"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def keep_one(gokku, tmp_path) -> dict[str, bytes]:
    """Install a plugin named ``keep`` and return the snapshot "nothing changed" means."""
    gokku.ok("plugins:add", str(write_plugin(tmp_path / "keep", namespace="keep")))
    return gokku.snapshot()
