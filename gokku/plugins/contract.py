"""Checking a plugin tree against the plugin contract (spec: Required Files).

Gokku's official plugins keep install/uninstall in ``bin/``; the spec puts them at the
root. Either satisfies the contract. A builder (only ``hooks/``) needs neither, nor the
service commands (help, info, logs).
"""

import contextlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gokku.errors import GokkuError
from gokku.names import is_name
from gokku.plugins.bashscan import code_only
from gokku.plugins.manifest import (
    parse_commands,
    parse_config,
    parse_requires,
    parse_system_packages,
)

REQUIRED_COMMANDS = ("help", "info", "logs")
MANIFEST = "plugin.yml"
SYSTEM_ROOT = "/opt/gokku"
SCRIPT_DIRS = ("", "bin", "commands", "hooks", "lib")
# The root itself or a path under it, not /opt/gokku-old.
_USE_OF_ROOT = re.compile(re.escape(SYSTEM_ROOT) + r"(?![A-Za-z0-9_.-])")


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    message: str


def _has_script(tree: Path, script: str) -> bool:
    return (tree / script).is_file() or (tree / "bin" / script).is_file()


def is_builder(tree: Path) -> bool:
    """A plugin that only builds or runs apps: deploy triggers in ``hooks/`` and no
    install or uninstall, so no services, and nothing of a service plugin to require."""
    hooks = tree / "hooks"
    has_hooks = hooks.is_dir() and any(path.is_file() for path in hooks.iterdir())
    return has_hooks and not any(_has_script(tree, s) for s in ("install", "uninstall"))


def validate(tree: Path) -> list[Finding]:
    findings: list[Finding] = []
    builder = is_builder(tree)
    for script in () if builder else ("install", "uninstall"):
        if not _has_script(tree, script):
            findings.append(Finding("error", f"missing {script} (or bin/{script})"))
    for command in () if builder else REQUIRED_COMMANDS:
        if not (tree / "commands" / command).is_file():
            findings.append(Finding("error", f"missing commands/{command}"))
    for folder in ("bin", "commands"):
        for path in sorted((tree / folder).glob("*")) if (tree / folder).is_dir() else []:
            if path.is_file() and not is_name(path.name):
                findings.append(
                    Finding(
                        "warning",
                        f"{folder}/{path.name} can never be called: "
                        "command names are lowercase letters, digits and '-'",
                    )
                )
    try:
        namespace(tree)
    except GokkuError as exc:
        findings.append(Finding("error", exc.message))
    if not builder and not (tree / "commands" / "name").is_file():
        findings.append(Finding("warning", "missing commands/name (no namespace alias)"))
    try:
        manifest(tree)
    except GokkuError as exc:
        findings.append(Finding("error", exc.message))
    hard = hard_coded_root(tree)
    if hard:
        findings.append(Finding("warning", hard_coded_message(hard)))
    return findings


def hard_coded_root(tree: Path) -> list[str]:
    """Scripts that use /opt/gokku whatever GOKKU_ROOT is (Gokku's official plugins all do,
    starting with ``source /opt/gokku/scripts/plugin-helpers.sh``): under another GOKKU_ROOT
    they would read and delete (rm -rf) another install's data. A default that GOKKU_ROOT
    overrides (``${GOKKU_ROOT:-/opt/gokku}``), a comment, or a help text printed with
    ``cat <<EOF`` is no use of it (``bashscan``)."""
    found = []
    for path in _scripts(tree):
        with contextlib.suppress(OSError):
            text = path.read_bytes().decode("utf-8", errors="replace")
            if _USE_OF_ROOT.search(code_only(text)):
                found.append(str(path.relative_to(tree)))
    return found


def _scripts(tree: Path) -> list[Path]:
    """The Bash a plugin runs or sources: everything in its script folders, and at its root
    install, uninstall and ``*.sh`` (not a README or its records)."""
    scripts = []
    for folder in SCRIPT_DIRS:
        base = tree / folder
        for path in sorted(base.iterdir()) if base.is_dir() else []:
            if not path.is_file() or path.is_symlink():
                continue
            if folder or path.name in ("install", "uninstall") or path.suffix == ".sh":
                scripts.append(path)
    return scripts


def hard_coded_message(files: list[str]) -> str:
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    return (
        f"{shown} hard-code {SYSTEM_ROOT}: whatever GOKKU_ROOT is, they read and remove files there"
    )


def namespace(tree: Path) -> str | None:
    """What ``commands/name`` prints (``pg``). It is read, never run: a plain word."""
    path = tree / "commands" / "name"
    if not path.is_file():
        return None
    words = _name_words(path.read_text(encoding="utf-8", errors="replace"))
    if len(words) != 1 or not is_name(words[0]):
        raise GokkuError("commands/name must hold (or echo) one lowercase namespace word")
    return words[0]


def _name_words(text: str) -> list[str]:
    """Accept a bare word or a tiny script like ``#!/bin/bash\\necho "pg"``."""
    words = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("echo "):
            line = line[5:].strip().strip("'\"")
        words.extend(line.split())
    return words


def manifest(tree: Path) -> dict[str, Any]:
    """The optional ``plugin.yml`` (version, description, per-command stream use,
    settings, requirements)."""
    path = tree / MANIFEST
    if not path.is_file():
        return {}
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise GokkuError(f"{MANIFEST} is not valid YAML ({exc})".replace("\n", " ")) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise GokkuError(f"{MANIFEST} must be a mapping")
    data["commands"] = parse_commands(data)
    data["config"] = parse_config(data)
    data["requires"] = parse_requires(data)
    data["system_packages"] = parse_system_packages(data)
    return data


def errors_line(name: str, findings: list[Finding]) -> str:
    problems = "; ".join(f.message for f in findings if f.level == "error")
    return f"plugin {name!r} does not follow the plugin contract: {problems}"
