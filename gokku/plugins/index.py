"""Plugin indexes: where signed manifests of plugins are found.

An index is a directory served as plain files over HTTP(S) or kept in a git repository
(cloned into ``plugin-indexes/NAME/cache`` and fetched again at each use)::

    index.json          {"plugins": {NAME: DESCRIPTION}}  -- for plugins:search
    index.json.sig
    plugins/NAME.json   the manifest of one plugin (one file each: never one huge index)
    plugins/NAME.json.sig

Every file is signed (``gokku.plugins.signing``) and read only once a signer the admin
trusts for that index is found to have signed it. A manifest::

    {"name": "demo", "description": "...", "source": "acme/gokku-demo",
     "versions": {"1.2.0": {"source": "acme/gokku-demo@v1.2.0", "commit": "...",
                            "sha256": "...", "gokku": "^0.1", "requires": {"pg": "^1"},
                            "published": "2026-01-01T00:00:00Z"}}}
"""

import json
import os
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from gokku.errors import GokkuError, NotFound, UsageError
from gokku.names import check_name, is_name
from gokku.paths import Root
from gokku.plugins import semver, signing
from gokku.plugins.sources import _GIT_URL, _git, looks_like_path
from gokku.storage import lock, read_json, remove_tree, write_atomic, write_json

CATALOG = "index.json"
MAX_FILE = 1 << 20
FETCH_TIMEOUT = 30


def folder(root: Root) -> Path:
    return root.path / "plugin-indexes"


def manifest_path(name: str) -> str:
    return f"plugins/{check_name('plugin', name)}.json"


def kind_of(url: str, over_ssh: bool) -> str:
    """http (plain files over HTTP(S)) or git (a repository, cloned)."""
    if url.startswith(("http://", "https://")) and not url.rstrip("/").endswith(".git"):
        return "http"
    local = looks_like_path(url) or url.startswith("file://")
    if over_ssh and local:
        raise UsageError("over SSH an index is an http(s) or remote git URL, not a server path")
    if _GIT_URL.search(url):
        return "git"
    path = Path(url).expanduser()
    if looks_like_path(url) and ((path / ".git").exists() or (path / "HEAD").is_file()):
        return "git"  # a repository on this machine, for the server's own CLI
    raise UsageError(f"{url!r} is not an http(s) URL or a git repository")


@dataclass
class Index:
    name: str
    url: str
    default: bool
    path: Path  # plugin-indexes/NAME

    @property
    def kind(self) -> str:
        return kind_of(self.url, over_ssh=False)

    @property
    def signers(self) -> Path:
        return self.path / "allowed_signers"

    @cached_property
    def _checkout(self) -> Path:
        """The git index's files, fetched once per command."""
        cache = self.path / "cache"
        with lock(self.path.parent.parent / "locks", f"plugin-index-{self.name}"):
            if (cache / ".git").is_dir():
                _git(["-C", str(cache), "fetch", "--quiet", "--depth", "1", "origin", "HEAD"])
                _git(["-C", str(cache), "reset", "--quiet", "--hard", "FETCH_HEAD"])
            else:
                remove_tree(cache)
                _git(["clone", "--quiet", "--depth", "1", "--", self.url, str(cache)])
        return cache

    def read(self, relpath: str) -> bytes | None:
        """The file's bytes, or None when the index has no such file."""
        if self.kind == "http":
            return _download(f"{self.url.rstrip('/')}/{relpath}")
        base = self._checkout
        path = base / relpath
        if not path.is_file():
            return None
        if not path.resolve().is_relative_to(base.resolve()):
            raise GokkuError(f"index {self.name}: {relpath} points outside the index")
        if path.stat().st_size > MAX_FILE:
            raise GokkuError(f"index {self.name}: {relpath} is larger than {MAX_FILE} bytes")
        return path.read_bytes()

    def verified(self, relpath: str) -> Any | None:
        """The signed JSON file at ``relpath`` (None when absent); refused when its
        signature is missing or not from a signer trusted for this index."""
        data = self.read(relpath)
        if data is None:
            return None
        what = f"{relpath} of index {self.name}"
        signing.verify(data, self.read(relpath + ".sig"), self.signers, what)
        try:
            return json.loads(data)
        except ValueError:
            raise GokkuError(f"{what} is not JSON") from None

    def manifest(self, plugin: str) -> dict[str, Any] | None:
        found = self.verified(manifest_path(plugin))
        if found is None:
            return None
        check_manifest(found, f"index {self.name}")
        if found["name"] != plugin:
            raise GokkuError(f"index {self.name}: the manifest of {plugin} names {found['name']}")
        return found

    def catalog(self) -> dict[str, str]:
        found = self.verified(CATALOG) or {}
        plugins = found.get("plugins") if isinstance(found, dict) else None
        return {str(k): str(v) for k, v in plugins.items()} if isinstance(plugins, dict) else {}


def check_manifest(manifest: Any, where: str) -> None:
    """The shape every reader relies on; a version entry with a bad range is refused, and
    so is one without the hash its bytes are checked against (an archive's sha256, a git
    source's commit): it would install whatever the source serves."""
    if not isinstance(manifest, dict) or not is_name(str(manifest.get("name", ""))):
        raise GokkuError(f"{where}: a manifest without a plugin name")
    versions = manifest.get("versions")
    if not isinstance(versions, dict):
        raise GokkuError(f"{where}: manifest of {manifest['name']} has no versions")
    for number, entry in versions.items():
        semver.Version.parse(number)
        if not isinstance(entry, dict) or not entry.get("source"):
            raise GokkuError(f"{where}: {manifest['name']} {number} has no source")
        source = entry["source"]
        checked = "commit" if isinstance(source, dict) and source.get("kind") == "git" else "sha256"
        if not entry.get(checked):
            raise GokkuError(
                f"{where}: {manifest['name']} {number} has no {checked} to check it against: "
                "refused"
            )
        semver.Range.parse(entry.get("gokku") or "*")
        for dependency, wanted in (entry.get("requires") or {}).items():
            check_name("plugin", dependency)
            semver.Range.parse(wanted)


def _download(url: str) -> bytes | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT) as response:
            data = response.read(MAX_FILE + 1)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise GokkuError(f"could not read {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise GokkuError(f"could not read {url}: {getattr(exc, 'reason', exc)}") from None
    if len(data) > MAX_FILE:
        raise GokkuError(f"{url} is larger than {MAX_FILE} bytes")
    return data


def all_indexes(root: Root) -> list[Index]:
    """The configured indexes, the default one first."""
    base = folder(root)
    found = []
    for path in sorted(base.iterdir()) if base.is_dir() else []:
        record = read_json(path / "index.json") if (path / "index.json").is_file() else None
        if is_name(path.name) and isinstance(record, dict):
            found.append(Index(path.name, record["url"], bool(record.get("default")), path))
    return sorted(found, key=lambda i: not i.default)


def get(root: Root, name: str) -> Index:
    for index in all_indexes(root):
        if index.name == name:
            return index
    raise NotFound(f"no plugin index named {name!r} (see: gokku plugins:index list)")


def add(root: Root, name: str, url: str, signers: str, default: bool, over_ssh: bool) -> Index:
    check_name("index", name)
    kind_of(url, over_ssh)
    text = signing.check_allowed_signers(signers)
    base = folder(root)
    with lock(root.locks, "plugin-indexes"):
        path = base / name
        if (path / "index.json").is_file():
            raise GokkuError(f"plugin index {name!r} already exists; remove it first")
        if default:
            for other in all_indexes(root):
                record = read_json(other.path / "index.json")
                write_json(other.path / "index.json", {**record, "default": False})
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path / "allowed_signers", text.encode(), mode=0o600)
        record = {"url": url, "default": default, "added": time.strftime("%Y-%m-%dT%H:%M:%SZ")}
        write_json(path / "index.json", record)
    return get(root, name)


def remove(root: Root, name: str) -> None:
    index = get(root, name)
    with lock(root.locks, "plugin-indexes"):
        os.unlink(index.path / "index.json")  # gone at once; the rest is only a cache
        remove_tree(index.path)


def find(
    root: Root, plugin: str, indexes: list[Index] | None = None
) -> tuple[Index, dict[str, Any]] | None:
    """The first index (the default first) that has ``plugin``, with its manifest."""
    for index in all_indexes(root) if indexes is None else indexes:
        manifest = index.manifest(plugin)
        if manifest is not None:
            return index, manifest
    return None
