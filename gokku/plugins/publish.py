"""``plugins:publish``: add a version of a plugin to an index directory and sign it.

Run on the publisher's machine, where the signing key is. The source is fetched exactly
as ``plugins:add`` would fetch it on a server, so the archive's sha256 (or the git
commit) recorded is the one servers will check. A published version is never changed:
publishing it again from different bytes is refused.
"""

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from gokku.errors import GokkuError, UsageError
from gokku.names import check_name
from gokku.plugins import contract, index, semver, signing, sources
from gokku.plugins.manifest import requirements

FETCHABLE = ("github", "url", "git")


def publish(text: str, folder: Path, version: str, key: Path, name: str | None) -> dict[str, Any]:
    """Fetch, check, and write + sign ``plugins/NAME.json`` and ``index.json``."""
    semver.Version.parse(version)
    source = sources.parse(text)
    if source.kind not in FETCHABLE:
        raise UsageError(
            f"publish a source servers can fetch (OWNER/REPO@REF, an archive URL or a git URL), "
            f"not {text!r}"
        )
    name = check_name("plugin", name or source.default_name())
    if not folder.is_dir():
        raise GokkuError(f"index directory {folder} does not exist")
    with tempfile.TemporaryDirectory(prefix="gokku-publish-") as tmp:
        fetched = sources.fetch(source, Path(tmp))
        findings = contract.validate(fetched.tree)
        if any(f.level == "error" for f in findings):
            raise GokkuError(contract.errors_line(name, findings))
        declared = contract.manifest(fetched.tree)
    said = declared.get("version")
    if said is not None and str(said) != version:
        raise GokkuError(f"plugin.yml says version {said}, not {version}")
    gokku_range, requires = requirements(declared)
    pinned = sources.Source(source.kind, source.location, source.ref)
    if source.kind == "git":
        pinned = sources.Source("git", source.location, fetched.commit or source.ref)
    entry = {
        "source": pinned.to_record(),
        "commit": fetched.commit,
        "sha256": fetched.sha256,
        "gokku": gokku_range,
        "requires": requires,
        "published": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = folder / index.manifest_path(name)
    manifest = json.loads(path.read_text()) if path.is_file() else {"versions": {}}
    old = manifest["versions"].get(version)
    if old and (old.get("sha256"), old.get("commit")) != (entry["sha256"], entry["commit"]):
        raise GokkuError(f"{name} {version} is already published from other bytes: refused")
    description = str(declared.get("description") or manifest.get("description") or "")
    manifest.update(name=name, description=description, source=source.location)
    manifest["versions"][version] = old or entry
    _write_signed(path, manifest, key)
    catalog_path = folder / index.CATALOG
    catalog = json.loads(catalog_path.read_text()) if catalog_path.is_file() else {}
    catalog.setdefault("plugins", {})[name] = description
    _write_signed(catalog_path, catalog, key)
    return manifest["versions"][version]


def _write_signed(path: Path, value: Any, key: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    signing.sign(path, key)
