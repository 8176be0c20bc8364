"""Unpacking plugin archives without trusting them.

Refused: absolute paths, ``..``, links that resolve outside the plugin, device files and
FIFOs, more than MAX_FILES members or MAX_BYTES unpacked. The archive is read once as a
stream into a staging directory; the caller renames the result into place only when
everything passed, so a refused archive leaves nothing behind.
"""

import os
import shutil
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from gokku.errors import GokkuError

MAX_FILES = 5000
MAX_BYTES = 100 * 1024 * 1024


class UnsafeArchive(GokkuError):
    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"refusing archive {source}: {reason}")


@dataclass
class Unpacked:
    tree: Path
    commit: str | None  # GitHub/git-archive tarballs name their commit in a pax header


def unpack(archive: Path, dest: Path, label: str) -> Unpacked:
    """Unpack ``archive`` into the new directory ``dest`` and return the plugin tree in it.

    A single top-level directory (GitHub's ``repo-REF/``) is dropped and so is ``.git``.
    """
    dest.mkdir()
    count = total = 0
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                count += 1
                # A hard link is unpacked as a copy of its target: it costs that many bytes.
                linked = _link_source(member, dest, label) if member.islnk() else None
                total += linked.stat().st_size if linked else max(member.size, 0)
                if count > MAX_FILES:
                    raise UnsafeArchive(label, f"more than {MAX_FILES} files")
                if total > MAX_BYTES:
                    raise UnsafeArchive(label, f"more than {MAX_BYTES // 2**20} MiB unpacked")
                _extract_member(tar, member, dest, label)
            commit = tar.pax_headers.get("comment")
    except (tarfile.TarError, EOFError, OSError, UnicodeError) as exc:
        if isinstance(exc, GokkuError):
            raise
        raise UnsafeArchive(label, f"not a readable tar archive ({exc})") from None
    check_links(dest, label)
    tree = _strip_top(dest)
    _drop_git(tree)
    if not any(tree.iterdir()):
        raise UnsafeArchive(label, "it is empty")
    return Unpacked(tree=tree, commit=commit if commit and len(commit) == 40 else None)


def _member_path(name: str, label: str) -> PurePosixPath:
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise UnsafeArchive(label, f"absolute path {name!r}")
    if ".." in path.parts:
        raise UnsafeArchive(label, f"path {name!r} climbs out with '..'")
    return path


def _inside(path: Path, root: Path) -> bool:
    real = os.path.realpath(path)
    base = os.path.realpath(root)
    return real == base or real.startswith(base + os.sep)


def _extract_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, label: str) -> None:
    rel = _member_path(member.name, label)
    if not rel.parts or rel == PurePosixPath("."):
        return
    target = dest.joinpath(*rel.parts)
    if not _inside(target.parent, dest):
        raise UnsafeArchive(label, f"{member.name!r} would be written through a link outside")
    if member.isdir():
        target.mkdir(parents=True, exist_ok=True)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.is_symlink() or target.exists():
        raise UnsafeArchive(label, f"{member.name!r} appears twice")
    if member.issym():
        if member.linkname.startswith("/"):
            raise UnsafeArchive(label, f"link {member.name!r} points to an absolute path")
        os.symlink(member.linkname, target)
        if not _inside(target, dest):
            raise UnsafeArchive(label, f"link {member.name!r} points outside the plugin")
    elif member.islnk():
        shutil.copyfile(_link_source(member, dest, label), target)
        os.chmod(target, _mode(member.mode))
    elif member.isreg():
        handle = tar.extractfile(member)
        assert handle is not None
        with handle, open(target, "xb") as out:
            shutil.copyfileobj(handle, out)
        os.chmod(target, _mode(member.mode))
    else:
        raise UnsafeArchive(label, f"{member.name!r} is a device, FIFO or other special file")


def _link_source(member: tarfile.TarInfo, dest: Path, label: str) -> Path:
    """The already unpacked file that the hard link ``member`` copies; it must be inside."""
    source = dest.joinpath(*_member_path(member.linkname, label).parts)
    if not _inside(source, dest) or not source.is_file():
        raise UnsafeArchive(label, f"hard link {member.name!r} points outside the plugin")
    return source


def _mode(mode: int) -> int:
    """Keep only whether a file is executable; never setuid, never world-writable."""
    return 0o755 if mode & 0o111 else 0o644


def check_links(dest: Path, label: str) -> None:
    """Links are checked again once all are in place: a later link can redirect an earlier one."""
    for folder, dirs, files in os.walk(dest):
        for name in dirs + files:
            path = Path(folder, name)
            if path.is_symlink() and not _inside(path, dest):
                rel = path.relative_to(dest)
                raise UnsafeArchive(label, f"link {str(rel)!r} points outside the plugin")


def check_tree(folder: Path, label: str) -> None:
    """The archive limits, applied to a local directory before it is copied."""
    count = total = 0
    for parent, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in dirs + files:
            info = os.lstat(os.path.join(parent, name))
            count += 1
            if count > MAX_FILES:
                raise UnsafeArchive(label, f"more than {MAX_FILES} files")
            if stat.S_ISREG(info.st_mode):
                total += info.st_size
                if total > MAX_BYTES:
                    raise UnsafeArchive(label, f"more than {MAX_BYTES // 2**20} MiB")
            elif not (stat.S_ISDIR(info.st_mode) or stat.S_ISLNK(info.st_mode)):
                rel = os.path.relpath(os.path.join(parent, name), folder)
                raise UnsafeArchive(label, f"{rel!r} is a device, FIFO or other special file")


def _strip_top(dest: Path) -> Path:
    entries = list(dest.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return dest


def _drop_git(tree: Path) -> None:
    for folder, dirs, _files in os.walk(tree):
        if ".git" in dirs:
            shutil.rmtree(Path(folder, ".git"))
            dirs.remove(".git")
    stray = tree / ".git"
    if stray.is_file() or stray.is_symlink():
        stray.unlink()
