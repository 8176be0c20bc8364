"""Where a plugin comes from, and fetching it into a staging directory.

SOURCE forms (``plugins:add``): ``OWNER/REPO[@REF]`` or ``https://github.com/OWNER/REPO``
(a GitHub archive from GOKKU_GITHUB_URL), an http(s) ``.tar.gz``/``.tgz`` URL, a git URL,
a local directory or archive, or the bare name of a plugin bundled with Gokku.
"""

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gokku.errors import GokkuError, NotFound, UsageError
from gokku.names import is_name
from gokku.plugins.archives import check_links, check_tree, unpack
from gokku.storage import remove_tree

GITHUB_DEFAULT = "https://github.com"
MAX_DOWNLOAD = 50 * 1024 * 1024
DOWNLOAD_TIMEOUT = 60
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "bundled"

_GITHUB_SHORT = re.compile(r"^([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?(?:@(.+))?$")
_GITHUB_URL = re.compile(r"^https://github\.com/([A-Za-z0-9_.-]+)/([A-Za-z0-9_.-]+?)(?:\.git)?/?$")
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_GIT_URL = re.compile(r"^(git://|ssh://|file://|git@[^:]+:)|\.git/?$")


@dataclass(frozen=True)
class Source:
    kind: str  # github | url | git | path | archive | bundled
    location: str
    ref: str = ""

    def default_name(self) -> str:
        base = self.location.rstrip("/")
        if self.kind == "github":
            base = base.split("/")[1]
        elif self.kind == "url" and "/archive/" in base:
            base = base.split("/archive/")[0]
        base = base.rsplit("/", 1)[-1].rsplit(":", 1)[-1]
        for suffix in (*_ARCHIVE_SUFFIXES, ".git"):
            base = base.removesuffix(suffix)
        base = base.lower().removeprefix("gokku-")
        if not is_name(base):
            raise UsageError(f"cannot make a plugin name from {self.location!r}; pass --name NAME")
        return base

    def remote(self) -> bool:
        """Fetched from elsewhere (or bundled), not read from the server's own files."""
        if self.kind in ("github", "bundled"):
            return True
        if self.kind == "url":
            return self.location.startswith("https://")
        return self.kind == "git" and self.location.startswith(("https://", "ssh://", "git@"))

    def describe(self) -> str:
        return f"{self.location}@{self.ref}" if self.ref else self.location

    def to_record(self) -> dict[str, Any]:
        return asdict(self)


REMOTE_ONLY = (
    "over SSH a plugin comes from a remote source: OWNER/REPO, an https URL, a git URL "
    "over https or ssh, or a bundled name (the server reads none of its own files for you)"
)


def parse(text: str, ref: str | None = None, remote_only: bool = False) -> Source:
    """Decide what kind of source ``text`` is; ``--ref`` only where a ref means something.

    ``remote_only`` (an SSH caller): nothing that makes the server read its own files.
    """
    if remote_only and looks_like_path(text):
        raise UsageError(REMOTE_ONLY)  # before a look at the path: no probing of the server
    source = _kind_of(text, ref)
    if remote_only and not source.remote():
        raise UsageError(REMOTE_ONLY)
    if ref and source.kind not in ("github", "git"):
        raise UsageError(f"--ref applies to GitHub and git sources, not to {text!r}")
    return source


def looks_like_path(text: str) -> bool:
    """Paths look like paths: a bare word is a bundled name or OWNER/REPO, never a
    directory that happens to exist where the command was run."""
    return text in (".", "..") or text.startswith(("/", "./", "../", "~"))


def _kind_of(text: str, ref: str | None) -> Source:
    if not text:
        raise UsageError("missing plugin source")
    if looks_like_path(text):
        path = str(Path(text).expanduser().resolve())
        if not os.path.exists(path):
            raise NotFound(f"plugin source {text} does not exist")
        kind = "path" if os.path.isdir(path) else "archive"
        if kind == "path" and path.endswith(".git"):
            kind = "git"  # a local repository (bare ones have no plugin files): clone it
        return Source(kind, path, ref or "")
    if match := _GITHUB_URL.match(text):
        return Source("github", f"{match[1]}/{match[2]}", ref or "HEAD")
    if text.startswith(("http://", "https://")) and not _GIT_URL.search(text):
        if not text.split("?")[0].endswith(_ARCHIVE_SUFFIXES):
            raise UsageError(f"{text!r} is not a .tar.gz/.tgz archive URL, a git URL or GitHub")
        return Source("url", text, ref or "")
    if _GIT_URL.search(text):
        return Source("git", text, ref or "")
    if match := _GITHUB_SHORT.match(text):
        return Source("github", f"{match[1]}/{match[2]}", ref or match[3] or "HEAD")
    if is_name(text):
        return Source("bundled", text, "")
    raise UsageError(
        f"cannot tell what plugin source {text!r} is: give OWNER/REPO, a URL, a git URL, "
        "a path, or an official plugin name"
    )


@dataclass
class Fetched:
    tree: Path
    commit: str | None = None
    sha256: str | None = None


def fetch(source: Source, staging: Path) -> Fetched:
    """Bring the plugin's files into a new directory under ``staging``."""
    if source.kind == "github":
        base = os.environ.get("GOKKU_GITHUB_URL", GITHUB_DEFAULT).rstrip("/")
        return _from_url(f"{base}/{source.location}/archive/{source.ref}.tar.gz", staging)
    if source.kind == "url":
        return _from_url(source.location, staging)
    if source.kind in ("archive", "path") and not os.path.exists(source.location):
        raise NotFound(f"plugin source {source.location} does not exist (any more)")
    if source.kind == "archive":
        return _from_archive(Path(source.location), staging, source.location)
    if source.kind == "git":
        return _from_git(source, staging)
    if source.kind == "path":
        return _from_dir(Path(source.location), staging)
    bundled = BUNDLED_DIR / source.location
    if not bundled.is_dir():
        available = (
            sorted(p.name for p in BUNDLED_DIR.iterdir() if p.is_dir())
            if (BUNDLED_DIR.is_dir())
            else []
        )
        raise NotFound(
            f"no official plugin named {source.location!r}"
            + (f" (bundled: {', '.join(available)})" if available else "")
            + "; give OWNER/REPO, a URL, a git URL or a path"
        )
    return _from_dir(bundled, staging)


def _from_archive(archive: Path, staging: Path, label: str) -> Fetched:
    digest = hashlib.sha256()
    with open(archive, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    unpacked = unpack(archive, staging / "unpacked", label)
    return Fetched(unpacked.tree, unpacked.commit, digest.hexdigest())


def _from_url(url: str, staging: Path) -> Fetched:
    import urllib.error
    import urllib.request

    archive = staging / "download"
    try:
        with (
            urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response,
            open(archive, "wb") as out,
        ):
            size = 0
            while block := response.read(1 << 16):
                size += len(block)
                if size > MAX_DOWNLOAD:
                    raise GokkuError(f"refusing {url}: larger than {MAX_DOWNLOAD // 2**20} MiB")
                out.write(block)
    except urllib.error.HTTPError as exc:
        raise GokkuError(f"could not download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise GokkuError(f"could not download {url}: {reason}") from None
    return _from_archive(archive, staging, url)


def _git(args: list[str], cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        lines = [x for x in proc.stderr.strip().splitlines() if x.strip()]
        raise GokkuError(f"git {args[0]} failed: {lines[-1] if lines else proc.returncode}")
    return proc.stdout.strip()


def _from_git(source: Source, staging: Path) -> Fetched:
    tree = staging / "clone"
    branch = ["--branch", source.ref] if source.ref else []
    try:
        _git(["clone", "--quiet", "--depth", "1", *branch, "--", source.location, str(tree)])
    except GokkuError:
        if not source.ref:
            raise
        # A commit id cannot be cloned with --branch; fetch it directly.
        remove_tree(tree)
        tree.mkdir()
        _git(["init", "--quiet"], tree)
        _git(["fetch", "--quiet", "--depth", "1", "--", source.location, source.ref], tree)
        _git(["checkout", "--quiet", "FETCH_HEAD"], tree)
    commit = _git(["rev-parse", "HEAD"], tree)
    shutil.rmtree(tree / ".git")
    check_links(tree, source.location)
    return Fetched(tree, commit)


def _from_dir(folder: Path, staging: Path) -> Fetched:
    commit = None
    if (folder / ".git").exists():
        try:
            commit = _git(["-C", str(folder), "rev-parse", "HEAD"])
        except GokkuError:
            commit = None
    check_tree(folder, str(folder))
    tree = staging / "copy"
    try:
        shutil.copytree(folder, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
    except shutil.Error as exc:
        # copytree gathers per-file failures (an unreadable file); report the first.
        raise GokkuError(f"could not copy {folder}: {exc.args[0][0][2]}") from None
    check_links(tree, str(folder))
    return Fetched(tree, commit)
