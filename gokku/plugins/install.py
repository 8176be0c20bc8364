"""Installing, updating and removing plugins, atomically.

Fetch, unpack and validate happen in ``plugins/.staging-*``; only a tree that passed is
renamed into ``plugins/NAME``. An update renames the old tree aside first and puts it
back if anything fails, so a plugin is always the old version or the new one, whole. An
update killed between its two renames leaves the old tree in staging: the next command
on the plugin (or ``gokku doctor --fix``) puts it back.
"""

import contextlib
import os
import re
import secrets
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gokku import __version__, services
from gokku.commands import RESERVED_NAMESPACES
from gokku.context import Context
from gokku.errors import GokkuError
from gokku.names import check_name, is_name
from gokku.paths import Root
from gokku.plugins import contract, plan, registry, semver, settings, sources, system_packages
from gokku.plugins.manifest import requirements
from gokku.storage import fsync_dir, lock, remove_tree, write_json

EXECUTABLE_DIRS = ("bin", "commands", "hooks")
STAGING_TOKEN_BYTES = 4
STAGING = re.compile(rf"\.staging-(.+)-[0-9a-f]{{{2 * STAGING_TOKEN_BYTES}}}")
PREVIOUS = "previous"  # an update's old tree, until the new one is in place


def staging_dirs(root: Root, name: str | None = None) -> list[tuple[str, Path]]:
    """(plugin name, path) of the staging directories there are, of plugin ``name`` only
    when given: ``.staging-pg-`` must not find those of ``pg-admin``."""
    if not root.plugins.is_dir():
        return []
    found = []
    for path in sorted(root.plugins.iterdir()):
        match = STAGING.fullmatch(path.name)
        if match and is_name(match[1]) and path.is_dir() and name in (None, match[1]):
            found.append((match[1], path))
    return found


def restore_interrupted(root: Root, name: str) -> Path | None:
    """Put back the old copy of a plugin whose update was killed between its two renames
    (the plugin gone, its old tree in ``.staging-NAME-*/previous``); return where it was.
    The rest of that staging directory goes too. The caller holds the plugin's lock."""
    if root.plugin_dir(name).exists():
        return None
    for _, staging in staging_dirs(root, name):
        previous = staging / PREVIOUS
        if previous.is_dir():
            os.rename(previous, root.plugin_dir(name))
            fsync_dir(root.plugins)
            remove_tree(staging)
            return previous
    return None


def _recover(ctx: Context, name: str) -> None:
    """Before any change to a plugin: finish what a killed update left half-done."""
    previous = restore_interrupted(ctx.root, name)
    if previous is not None:
        ctx.warn(
            f"plugin {name} was missing after an update cut off halfway: "
            f"put its previous copy back from {previous.relative_to(ctx.root.path)}"
        )


@contextlib.contextmanager
def _staging(ctx: Context, name: str) -> Iterator[Path]:
    """A scratch directory beside the plugins (same filesystem, so renames are atomic).

    Callers hold the plugin's lock (and ran ``_recover``), so any other staging dir of
    this name is the remains of a killed run: it goes first.
    """
    ctx.root.plugins.mkdir(parents=True, exist_ok=True)
    for _, stale in staging_dirs(ctx.root, name):
        remove_tree(stale)
    path = ctx.root.plugins / f".staging-{name}-{secrets.token_hex(STAGING_TOKEN_BYTES)}"
    path.mkdir()
    try:
        yield path
    finally:
        remove_tree(path)


@dataclass(frozen=True)
class Origin:
    """Where an index install comes from: the index and the signed entry of the version,
    whose sha256 and commit the fetched plugin must match."""

    index: str
    version: str
    entry: dict[str, Any]


def _prepare(
    ctx: Context,
    name: str,
    source: sources.Source,
    staging: Path,
    force: bool,
    origin: Origin | None = None,
    coming: dict[str, str] | None = None,
) -> Path:
    """Fetch and validate into ``staging``; return the finished tree, record included.
    ``coming``: the versions the same plan installs, which count as installed."""
    ctx.info(f"Fetching {name} from {source.describe()}")
    fetched = sources.fetch(source, staging)
    if origin is not None:
        _check_origin(name, origin, fetched)
    findings = contract.validate(fetched.tree)
    if any(f.level == "error" for f in findings):
        raise GokkuError(contract.errors_line(name, findings))
    hard = contract.hard_coded_root(fetched.tree)
    if hard and str(ctx.root.path) != contract.SYSTEM_ROOT and not force:
        raise GokkuError(
            f"refusing {name}: {contract.hard_coded_message(hard)}, and this GOKKU_ROOT is "
            f"{ctx.root.path}; use it with GOKKU_ROOT={contract.SYSTEM_ROOT}, or --force if "
            "you know it does no harm here"
        )
    for finding in findings:
        ctx.warn(f"{name}: {finding.message}")
    namespace = contract.namespace(fetched.tree)
    manifest = contract.manifest(fetched.tree)
    gokku_range, requires = requirements(manifest)
    if not semver.allows(gokku_range, __version__):
        raise GokkuError(f"{name} needs Gokku {gokku_range}; this Gokku is {__version__}: refused")
    _check_requires(ctx.root, name, requires, coming or {})
    _make_executable(fetched.tree)
    write_json(
        fetched.tree / registry.RECORD,
        {
            "name": name,
            "url": source.describe(),
            "source": source.to_record(),
            "namespace": namespace or name,
            "version": origin.version if origin else str(manifest.get("version") or ""),
            "description": str(manifest.get("description") or ""),
            "commands_io": manifest.get("commands", {}),
            "config": manifest.get("config", {}),
            "system_packages": manifest.get("system_packages", []),
            "commit": fetched.commit,
            "sha256": fetched.sha256,
            "index": origin.index if origin else None,
            "gokku": gokku_range,
            "requires": requires,
            "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )
    return fetched.tree


def _check_origin(name: str, origin: Origin, fetched: sources.Fetched) -> None:
    """The bytes fetched are the ones the index signed for, or nothing is installed."""
    for field, got in (("sha256", fetched.sha256), ("commit", fetched.commit)):
        wanted = origin.entry.get(field)
        if wanted and got != wanted:
            raise GokkuError(
                f"{name} {origin.version}: the {field} fetched ({got}) is not the one index "
                f"{origin.index} signed ({wanted}): refused"
            )


def _check_requires(
    root: Root, name: str, requires: dict[str, str], coming: dict[str, str]
) -> None:
    """What a plugin requires must be installed, or come in the same plan, at a version
    its range allows: nothing is installed behind the admin's back."""
    for dependency, wanted in requires.items():
        version = coming.get(dependency)
        if version is None and root.plugin_dir(dependency).is_dir():
            version = str(registry.load(root, dependency).record.get("version") or "")
        try:
            fits = version is not None and semver.allows(wanted, version)
        except GokkuError:
            # Installed without a version: only "*" (any version at all) holds.
            fits = version == "" and wanted.strip() == "*"
        if not fits:
            have = f"{dependency} is not installed"
            if version is not None:
                have = f"{dependency} {version or '(no version)'} is installed"
            raise GokkuError(
                f"{name} requires {dependency} {wanted}, and {have}; "
                f"add it first (plugins:add {dependency}@{wanted}): refused"
            )


def _check_namespace(ctx: Context, name: str, namespace: str | None) -> None:
    for word in filter(None, {name, namespace}):
        if word in RESERVED_NAMESPACES:
            raise GokkuError(f"plugin namespace {word!r} is taken by Gokku's built-in commands")
        for other in registry.installed(ctx.root):
            if other.name != name and word in (other.name, other.namespace):
                raise GokkuError(f"plugin namespace {word!r} is taken by plugin {other.name!r}")


@contextlib.contextmanager
def _claiming(ctx: Context, name: str, tree: Path) -> Iterator[None]:
    """Check the name and alias and put the tree in place under one lock for all plugins:
    per-name locks alone let two plugins added at once take the same namespace."""
    with lock(ctx.root.locks, "plugin-namespaces"):
        _check_namespace(ctx, name, contract.namespace(tree))
        yield


def _make_executable(tree: Path) -> None:
    scripts = [tree / "install", tree / "uninstall"]
    for folder in EXECUTABLE_DIRS:
        if (tree / folder).is_dir():
            scripts += list((tree / folder).iterdir())
    for path in scripts:
        if path.is_file() and not path.is_symlink():
            mode = path.stat().st_mode
            path.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def _put_in_place(ctx: Context, name: str, tree: Path, staging: Path) -> None:
    """Rename the new tree into place; an installed one goes aside to ``staging/previous``
    first and comes back if the second rename fails."""
    target = ctx.root.plugin_dir(name)
    with _claiming(ctx, name, tree):
        if target.exists():
            os.rename(target, staging / PREVIOUS)
            try:
                os.rename(tree, target)
            except OSError:
                os.rename(staging / PREVIOUS, target)
                raise
        else:
            os.rename(tree, target)
        fsync_dir(ctx.root.plugins)


def _take_back(ctx: Context, name: str, staging: Path) -> None:
    """Undo ``_put_in_place``: the plugin goes, its previous tree (if any) comes back."""
    os.rename(ctx.root.plugin_dir(name), staging / "undone")
    if (staging / PREVIOUS).is_dir():
        os.rename(staging / PREVIOUS, ctx.root.plugin_dir(name))
    fsync_dir(ctx.root.plugins)


def apply(
    ctx: Context,
    steps: list[plan.Step],
    force: bool = False,
    check: Callable[[], None] | None = None,
) -> None:
    """Install or change every plugin of a plan, or none.

    Each is fetched, checked against its signed entry and validated before any is put in
    place; a failure while they are put in place, or of ``check`` once they all are (a
    health check), takes back those already there: the previous versions come back."""
    coming = {step.name: step.version for step in steps}
    with contextlib.ExitStack() as stack:
        for name in sorted(coming):
            stack.enter_context(lock(ctx.root.locks, f"plugin-{name}"))
            _recover(ctx, name)
        staged = []
        for step in steps:
            staging = stack.enter_context(_staging(ctx, step.name))
            source = _index_source(ctx, step)
            origin = Origin(step.index.name, step.version, step.entry)
            tree = _prepare(ctx, step.name, source, staging, force, origin, coming)
            staged.append((step.name, tree, staging))
        done: list[tuple[str, Path]] = []
        try:
            for name, tree, staging in staged:
                _put_in_place(ctx, name, tree, staging)
                done.append((name, staging))
            if check is not None:
                check()
        except BaseException:
            for name, staging in reversed(done):
                _take_back(ctx, name, staging)
                ctx.warn(f"took back {name}: the plan is installed whole or not at all")
            raise
    for step in steps:
        ctx.info(f"Plugin {step.name} {step.version} installed from index {step.index.name}")
        system_packages.report_missing(ctx, registry.load(ctx.root, step.name))


def _index_source(ctx: Context, step: plan.Step) -> sources.Source:
    """The signed entry's source; over SSH only one the server fetches from elsewhere."""
    record = step.entry.get("source")
    kinds = ("github", "url", "git")
    if not isinstance(record, dict) or record.get("kind") not in kinds:
        raise GokkuError(
            f"index {step.index.name}: {step.name} {step.version} has no usable source"
        )
    source = sources.Source(record["kind"], str(record["location"]), str(record.get("ref") or ""))
    if ctx.request.identity.over_ssh and not source.remote():
        raise GokkuError(f"{step.name} {step.version}: {sources.REMOTE_ONLY}")
    return source


def add(
    ctx: Context, text: str, name: str | None, ref: str | None, force: bool = False
) -> registry.Plugin:
    source = sources.parse(text, ref, remote_only=ctx.request.identity.over_ssh)
    name = check_name("plugin", name or source.default_name())
    with lock(ctx.root.locks, f"plugin-{name}"):
        _recover(ctx, name)
        target = ctx.root.plugin_dir(name)
        if target.exists():
            current = registry.load(ctx.root, name)
            if current.record.get("source") == source.to_record():
                ctx.info(f"Plugin {name} is already installed from {source.describe()}")
                return current
            raise GokkuError(
                f"plugin {name!r} is already installed from {current.record.get('url', '?')}; "
                f"use plugins:update {name} or plugins:remove {name} first"
            )
        _check_namespace(ctx, name, None)
        settings.forget(ctx.root, name)  # a remove cut off before it got there: start clean
        with _staging(ctx, name) as staging:
            _put_in_place(ctx, name, _prepare(ctx, name, source, staging, force), staging)
    plugin = registry.load(ctx.root, name)
    ctx.info(
        f"Plugin {name} installed"
        + (f" (namespace {plugin.namespace})" if plugin.namespace else "")
    )
    system_packages.report_missing(ctx, plugin)
    return plugin


def update(ctx: Context, name: str, ref: str | None, force: bool = False) -> registry.Plugin:
    check_name("plugin", name)
    with lock(ctx.root.locks, f"plugin-{name}"):
        _recover(ctx, name)
        current = registry.load(ctx.root, name)
        if current.settings.pin:
            raise GokkuError(
                f"plugin {name!r} is pinned at {current.settings.pin}; "
                f"unpin it first: gokku plugins:unpin {name}"
            )
        recorded = current.record.get("source")
        if not isinstance(recorded, dict) or "kind" not in recorded:
            raise GokkuError(f"plugin {name!r} has no recorded source; remove and add it again")
        source = sources.Source(
            recorded["kind"], recorded["location"], ref if ref is not None else recorded["ref"]
        )
        if ctx.request.identity.over_ssh and not source.remote():
            raise GokkuError(
                f"plugin {name!r} comes from {source.describe()} on the server, which it "
                f"reads for no SSH caller: run plugins:update {name} on the server itself"
            )
        with _staging(ctx, name) as staging:
            _put_in_place(ctx, name, _prepare(ctx, name, source, staging, force), staging)
    plugin = registry.load(ctx.root, name)
    ctx.info(f"Plugin {name} updated from {source.describe()}")
    return plugin


def remove(ctx: Context, name: str, force: bool) -> None:
    check_name("plugin", name)
    with lock(ctx.root.locks, f"plugin-{name}"):
        _recover(ctx, name)
        plugin = registry.load(ctx.root, name)
        refuse_if_required(ctx.root, name)
        users = [s.name for s in services.all_services(ctx.root) if s.plugin == name]
        if users and not force:
            raise GokkuError(
                f"plugin {name!r} still has services: {', '.join(users)}; destroy them first "
                "or use --force"
            )
        if users:
            ctx.warn(f"services left without their plugin: {', '.join(users)}")
        with _staging(ctx, name) as staging:
            os.rename(plugin.path, staging / "removed")
            fsync_dir(ctx.root.plugins)
        settings.forget(ctx.root, name)
    ctx.info(f"Plugin {name} removed")


def refuse_if_required(root: Root, name: str) -> None:
    """A plugin that another installed plugin requires (``requires:``) stays."""
    needing = [
        other.name
        for other in registry.installed(root)
        if other.name != name and name in (other.record.get("requires") or {})
    ]
    if needing:
        which = "plugin" if len(needing) == 1 else "plugins"
        raise GokkuError(
            f"plugin {name!r} is required by {which} {', '.join(needing)}; remove {which} "
            f"{', '.join(needing)} first"
        )
