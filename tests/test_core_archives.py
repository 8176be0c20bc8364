"""Safe plugin extraction: hostile archives (and hostile git/directory trees) are refused
with one line, change nothing under the root and write nothing outside it."""

import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import write_plugin
from plugin_checks import error_line, keep_one, plugin_entries

TOP = "gokku-demo-1234567/"
GOOD = {
    "install": 'echo "installed $1"\n',
    "uninstall": 'echo "uninstalled $1"\n',
    "commands/name": "echo demo\n",
    "commands/help": "echo demo help\n",
    "commands/info": 'echo "info $1"\n',
    "commands/logs": 'echo "logs $1"\n',
}
MiB = 2**20


class _Zeros(io.RawIOBase):
    """``size`` zero bytes, produced as they are read: a bomb is never held in memory."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), self.left)
        buffer[:count] = bytes(count)
        self.left -= count
        return count


def regular(name: str, data: bytes = b"x\n", mode: int = 0o644) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    return info, data


def link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def special(name: str, kind: bytes) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = kind, 1, 3
    return info, None


def directory(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info, None


def zeros(name: str, size: int) -> tuple[tarfile.TarInfo, io.BufferedReader]:
    info = tarfile.TarInfo(name)
    info.size = size
    return info, io.BufferedReader(_Zeros(size))


def make_archive(path: Path, *extra, top: str = TOP, good: bool = True) -> Path:
    """A gzipped tar of a plugin that follows the contract, then the ``extra`` members."""
    members = [regular(top + rel, body.encode()) for rel, body in GOOD.items()] if good else []
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        for info, data in [*members, *extra]:
            if isinstance(data, bytes):
                data = io.BytesIO(data)
            tar.addfile(info, data)
    return path


@pytest.fixture
def kept(gokku, tmp_path):
    return keep_one(gokku, tmp_path)


def _escape(depth: int = 5) -> str:
    """From TOP inside the staging dir, this many '..' reach the test's tmp_path."""
    return TOP + "../" * depth


HOSTILE = {
    "traversal": (lambda out: [regular(_escape() + "canary")], "climbs out with '..'"),
    "traversal-late": (
        lambda out: [regular(TOP + "commands/../../../../../../canary")],
        "climbs out with '..'",
    ),
    "absolute-path": (lambda out: [regular(f"{out}/canary")], "absolute path"),
    "symlink-to-etc": (lambda out: [link(TOP + "etc", "/etc")], "points to an absolute path"),
    "symlink-climbing": (
        lambda out: [link(TOP + "out", "../../../../../outside"), regular(TOP + "out/canary")],
        "link 'gokku-demo-1234567/out' points outside the plugin",
    ),
    "symlink-chain": (
        # Lexically b stays inside; resolved, a is the top dir itself and b is above it.
        lambda out: [
            link(TOP + "a", "."),
            link(TOP + "b", "a/../.."),
            regular(TOP + "b/canary"),
        ],
        "link 'gokku-demo-1234567/b' points outside the plugin",
    ),
    "hardlink-absolute": (
        lambda out: [link(TOP + "pw", "/etc/passwd", tarfile.LNKTYPE)],
        "absolute path",
    ),
    "hardlink-climbing": (
        lambda out: [link(TOP + "pw", _escape(8) + "etc/passwd", tarfile.LNKTYPE)],
        "climbs out with '..'",
    ),
    "hardlink-to-missing": (
        lambda out: [link(TOP + "pw", TOP + "nothing-here", tarfile.LNKTYPE)],
        "hard link 'gokku-demo-1234567/pw' points outside the plugin",
    ),
    "char-device": (
        lambda out: [special(TOP + "null", tarfile.CHRTYPE)],
        "device, FIFO or other special file",
    ),
    "block-device": (
        lambda out: [special(TOP + "disk", tarfile.BLKTYPE)],
        "device, FIFO or other special file",
    ),
    "fifo": (
        lambda out: [special(TOP + "pipe", tarfile.FIFOTYPE)],
        "device, FIFO or other special file",
    ),
    "duplicate-member": (
        lambda out: [link(TOP + "commands/info", "help")],
        "'gokku-demo-1234567/commands/info' appears twice",
    ),
    "too-many-files": (
        lambda out: [directory(f"{TOP}d{i}") for i in range(5000 - len(GOOD) + 1)],
        "more than 5000 files",
    ),
    "gzip-bomb-one-member": (
        lambda out: [zeros(TOP + "bomb", 101 * MiB)],
        "more than 100 MiB unpacked",
    ),
    "gzip-bomb-many-members": (
        lambda out: [zeros(f"{TOP}bomb{i}", 40 * MiB) for i in range(3)],
        "more than 100 MiB unpacked",
    ),
    "hardlink-bomb": (
        # Each hard link is unpacked as a copy of its target: 3 x 40 MiB.
        lambda out: [
            zeros(TOP + "bomb", 40 * MiB),
            link(TOP + "bomb2", TOP + "bomb", tarfile.LNKTYPE),
            link(TOP + "bomb3", TOP + "bomb", tarfile.LNKTYPE),
        ],
        "more than 100 MiB unpacked",
    ),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_is_refused_and_changes_nothing(gokku, tmp_path, kept, case):
    members, reason = HOSTILE[case]
    outside = tmp_path / "outside"
    outside.mkdir()
    archive = make_archive(tmp_path / "gokku-demo.tar.gz", *members(outside))

    result = gokku("plugins:add", str(archive))

    assert result.code == 1
    line = error_line(result)
    assert f"refusing archive {archive}" in line
    assert reason in line
    assert gokku.snapshot() == kept
    assert plugin_entries(gokku) == ["keep"]
    assert not (tmp_path / "canary").exists()
    assert list(outside.iterdir()) == []


def test_the_archive_builder_makes_installable_plugins(gokku, tmp_path):
    """The hostile cases above fail because of their extra members, not the rest."""
    dirs = 5000 - len(GOOD)  # exactly the limit
    archive = make_archive(
        tmp_path / "gokku-demo.tar.gz", *[directory(f"{TOP}d{i}") for i in range(dirs)]
    )
    gokku.ok("plugins:add", str(archive))
    assert gokku.ok("demo:info", "x").stdout == "info x\n"
    assert len(list((gokku.root / "plugins" / "demo").iterdir())) == dirs + 4


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("not-a-tar.tar.gz", b"<html>Not Found</html>\n" * 20, "not a readable tar archive"),
        ("zero-bytes.tgz", b"", "not a readable tar archive"),
        ("text-in-gzip.tar.gz", None, "not a readable tar archive"),
        ("no-members.tar.gz", "empty", "it is empty"),
        ("only-git.tar.gz", "only-git", "it is empty"),
    ],
)
def test_unusable_archive_is_refused(gokku, tmp_path, kept, name, content, reason):
    path = tmp_path / name
    if content is None:
        import gzip

        path.write_bytes(gzip.compress(b"no tar in here\n" * 100))
    elif content == "empty":
        make_archive(path, good=False)
    elif content == "only-git":
        make_archive(path, regular(TOP + ".git/HEAD", b"ref: refs/heads/main\n"), good=False)
    else:
        path.write_bytes(content)

    result = gokku("plugins:add", str(path), "--name", "demo")

    assert result.code == 1
    line = error_line(result)
    assert f"refusing archive {path}" in line and reason in line
    assert gokku.snapshot() == kept
    assert plugin_entries(gokku) == ["keep"]


def test_hostile_archive_over_http_is_refused_too(gokku, github, tmp_path, kept):
    archive = make_archive(tmp_path / "evil.tar.gz", link(TOP + "etc", "/etc"))
    github.serve_file("acme/gokku-demo/archive/HEAD.tar.gz", archive.read_bytes())

    result = gokku("plugins:add", "acme/gokku-demo")

    assert result.code == 1
    assert "points to an absolute path" in error_line(result)
    assert gokku.snapshot() == kept
    assert plugin_entries(gokku) == ["keep"]


def test_top_directory_and_git_dirs_are_dropped_and_modes_tamed(gokku, tmp_path):
    archive = make_archive(
        tmp_path / "gokku-demo.tar.gz",
        regular(TOP + ".git/config", b"[core]\n"),
        regular(TOP + "lib/.git/HEAD", b"ref\n"),
        regular(TOP + "commands/status", b'echo "status $1"\n', mode=0o4777),
        regular(TOP + "lib/data.txt", b"data\n", mode=0o666),
        link(TOP + "commands/state", "status"),
        link(TOP + "lib/copy.txt", TOP + "lib/data.txt", tarfile.LNKTYPE),
    )
    gokku.ok("plugins:add", str(archive))
    tree = gokku.root / "plugins" / "demo"

    assert sorted(p.name for p in tree.iterdir()) == [
        "commands",
        "config.json",
        "install",
        "lib",
        "uninstall",
    ]
    assert sorted(p.name for p in (tree / "lib").iterdir()) == ["copy.txt", "data.txt"]
    assert (tree / "commands/status").stat().st_mode & 0o7777 == 0o755
    assert (tree / "lib/data.txt").stat().st_mode & 0o7777 == 0o644
    assert (tree / "lib/copy.txt").read_bytes() == b"data\n"
    assert not (tree / "lib/copy.txt").is_symlink()
    assert gokku.ok("demo:state", "s1").stdout == "status s1\n"


def test_archive_without_top_directory_keeps_its_layout(gokku, tmp_path):
    members = [regular(rel, body.encode()) for rel, body in GOOD.items()]
    archive = make_archive(tmp_path / "flat.tgz", *members, good=False)
    gokku.ok("plugins:add", str(archive), "--name", "flat")
    record = json.loads(gokku.ok("plugins:list", "--format", "json").stdout)[0]
    assert record["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
    assert record["commit"] is None
    assert gokku.ok("flat:info", "x").stdout == "info x\n"


def _git_repo(path: Path) -> Path:
    git = ["git", "-C", str(path), "-c", "user.email=t@example.com", "-c", "user.name=t"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "tree"], check=True)
    return path


@pytest.mark.parametrize("kind", ["directory", "git"])
@pytest.mark.parametrize("target", ["/etc", "../../outside"])
def test_outward_link_in_a_tree_is_refused(gokku, tmp_path, kept, kind, target):
    (tmp_path / "outside").mkdir()
    tree = write_plugin(tmp_path / "src" / "gokku-linky", namespace="linky")
    (tree / "escape").symlink_to(target)
    source = str(tree) if kind == "directory" else f"file://{_git_repo(tree)}"

    result = gokku("plugins:add", source)

    assert result.code == 1
    assert "link 'escape' points outside the plugin" in error_line(result)
    assert gokku.snapshot() == kept
    assert plugin_entries(gokku) == ["keep"]


def test_special_file_in_a_directory_is_refused(gokku, tmp_path, kept):
    import os

    tree = write_plugin(tmp_path / "gokku-piped", namespace="piped")
    os.mkfifo(tree / "pipe")

    result = gokku("plugins:add", str(tree))

    assert result.code == 1
    assert "'pipe' is a device, FIFO or other special file" in error_line(result)
    assert gokku.snapshot() == kept
    assert plugin_entries(gokku) == ["keep"]


def test_directory_over_the_file_limit_is_refused(gokku, tmp_path, kept):
    tree = write_plugin(tmp_path / "gokku-crowded", namespace="crowded")
    (tree / "many").mkdir()
    for i in range(5000):
        (tree / "many" / f"f{i}").touch()

    result = gokku("plugins:add", str(tree))

    assert result.code == 1
    assert "more than 5000 files" in error_line(result)
    assert gokku.snapshot() == kept
    assert plugin_entries(gokku) == ["keep"]
