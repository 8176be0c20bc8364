"""Shared fixtures: a temporary GOKKU_ROOT, the real ``gokku`` CLI in a process of its own, a local
HTTP server standing in for GitHub (it serves real ``git archive`` tarballs), and plugin
trees written to disk."""

import collections
import functools
import http.server
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cliforks import Forks

REPO = Path(__file__).resolve().parent.parent
STANDINS = Path(__file__).resolve().parent / "standins"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--serial-only",
        action="store_true",
        help="run only the tests marked serial (ops/test runs them after the parallel pass)",
    )
    parser.addoption(
        "--cpu-profile",
        metavar="FILE",
        help="add a line per test to FILE: the CPU seconds of pytest's process and of the "
        "children it reaped meanwhile (the CLI, servers, ssh, initdb); at the end, print "
        "the modules that cost most in FILE",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "serial: times itself against a deadline, so it runs alone: left out of a parallel "
        "run (-n), run by --serial-only",
    )


def _cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    forked = sum(server.cpu for server in _FORKS.values())  # not this process's children
    return own.ru_utime + own.ru_stime + reaped.ru_utime + reaped.ru_stime + forked


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    """``--cpu-profile``: the suite is CPU-bound, so wall times (``--durations``) say little
    about what to cut; a server a module shares counts when its test reaps it."""
    path = item.config.getoption("cpu_profile")
    started = _cpu_seconds()
    yield
    if path:
        with open(path, "a") as profile:
            profile.write(f"{_cpu_seconds() - started:.2f}\t{item.nodeid}\n")


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:
    path = config.getoption("cpu_profile")
    if not path or os.environ.get("PYTEST_XDIST_WORKER") or not os.path.exists(path):
        return
    by_module: collections.Counter[str] = collections.Counter()
    with open(path) as profile:
        for line in profile:
            seconds, nodeid = line.rstrip("\n").split("\t", 1)
            by_module[nodeid.split("::")[0]] += float(seconds)
    total = sum(by_module.values())
    terminalreporter.section(f"CPU by module ({path}: {total:.0f} s in all)")
    for module, seconds in by_module.most_common(10):
        terminalreporter.write_line(f"{seconds:8.1f} s {seconds / total:6.1%}  {module}")


# The modules that hold the run's longest tests (PostgreSQL taking and restoring backups,
# gigabytes through ssh, servers held to their timeouts: 20-110 s each on a busy two-core
# machine), longest first. A parallel run hands their tests out first, then the other
# groups (a group cannot be split over workers), then the rest in file order; ``ops/test``
# turns xdist's own order off, which starts the groups with the most tests first and the
# rest in file order: started late, one long test ended the run alone on one worker for
# half a minute, the other workers idle.
STARTED_FIRST = (
    "test_backup_targets_postgres",
    "test_ssh_bulk",
    "test_backups_postgres",
    "test_bundled_ssh",
    "test_bundled_postgres",
    "test_postgres_roles",
    "test_backups_full_disk",
    "test_destroy",
    "test_lifecycle_postgres",
    "test_access_members",
    "test_ssh_workers",
    "test_ssh_zygote",
)


def _started_first(item: pytest.Item) -> tuple[int, bool]:
    name = item.module.__name__
    listed = STARTED_FIRST.index(name) if name in STARTED_FIRST else len(STARTED_FIRST)
    return listed, item.get_closest_marker("xdist_group") is None


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Parallel runs (pytest-xdist): leave out the serial tests, which a busy machine would
    make miss their deadlines. Groups for ``--dist loadgroup`` (one worker runs a group's
    tests one after another): the tests of a module that share a module-scoped fixture
    form one, so that it is made once, unless a test names its group itself (a slow
    module splits its tests into groups that each make the fixture once). Modules that
    run real database servers need no group of their own: each worker's roots take their
    services' ports from the worker's own range (``write_settings``)."""
    serial_only = config.getoption("serial_only")
    if serial_only or os.environ.get("PYTEST_XDIST_WORKER"):  # set in xdist's workers
        runs: dict[bool, list[pytest.Item]] = {False: [], True: []}
        for item in items:
            runs[item.get_closest_marker("serial") is not None].append(item)
        if runs[not serial_only]:
            config.hook.pytest_deselected(items=runs[not serial_only])
        items[:] = runs[serial_only]
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        if item.get_closest_marker("xdist_group") is None and (
            fixtures
            and any(defs[-1].scope == "module" for defs in fixtures.name2fixturedefs.values())
        ):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
    items.sort(key=_started_first)  # stable: each module's tests keep their order


@dataclass
class Result:
    code: int
    out: bytes
    err: bytes
    # What the server logged around a session that ended without its exit status (255):
    # a failed assertion shows it (pytest prints the Result), so a rare loss is explained
    # by the run that saw it.
    server_log: str = ""

    @property
    def stdout(self) -> str:
        return self.out.decode()

    @property
    def stderr(self) -> str:
        return self.err.decode()


_FORKS: dict[bool, Forks] = {}


def forks(ssh: bool = False) -> Forks | None:
    """This process's fork server for CLI calls (``cliforks``), or with ``ssh`` for
    ``gokku serve``; none when GOKKU_TEST_FORKS=0, which runs every call as ``python -m
    gokku`` (to compare)."""
    if os.environ.get("GOKKU_TEST_FORKS") == "0":
        return None
    if ssh not in _FORKS:
        folder = Path(tempfile.mkdtemp(prefix="gokku-forks-"))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GOKKU_", "PYTEST_"))}
        _FORKS[ssh] = Forks(folder, {**env, "PYTHONPATH": str(REPO)}, REPO, ssh)
    return _FORKS[ssh]


@pytest.fixture(scope="session", autouse=True)
def _stop_forks() -> Iterator[None]:
    yield
    for server in _FORKS.values():
        server.close()
        shutil.rmtree(server.path.parent, ignore_errors=True)


class Gokku:
    """Runs the real CLI (``gokku/__main__.py``, forked by ``cliforks``) against one
    state root."""

    def __init__(
        self,
        root: Path,
        env: dict[str, str],
        prefix: list[str] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.root = root
        self.env = env
        self.prefix = prefix or []  # e.g. nsenter: the CLI run inside another namespace
        self.python = python  # one the state's owner can run (see ``gokku_python``)

    def __call__(
        self,
        *args: str,
        input: bytes = b"",
        env: dict[str, str] | None = None,
        timeout: float = 120,
        cwd: Path = REPO,
    ) -> Result:
        env = {**self.env, **(env or {})}
        server = forks()
        if not self.prefix and server is not None and server.suits(env, self.python):
            return Result(*server.run(list(args), input, env, timeout, cwd))
        proc = subprocess.run(
            [*self.prefix, self.python, "-m", "gokku", *args],
            input=input,
            capture_output=True,
            env=env,
            timeout=timeout,
            cwd=cwd,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def ok(self, *args: str, **kwargs) -> Result:
        result = self(*args, **kwargs)
        assert result.code == 0, f"gokku {' '.join(args)} exited {result.code}: {result.stderr}"
        return result

    def snapshot(self) -> dict[str, bytes]:
        """Every file under the root except locks and helpers: to prove nothing changed."""
        files = {}
        for path in sorted(self.root.rglob("*")):
            rel = path.relative_to(self.root)
            if rel.parts[0] in ("locks", "scripts") or not path.is_file():
                continue
            files[str(rel)] = path.read_bytes()
        return files


def write_settings(root: Path, ssh: dict | None = None) -> None:
    """The gokku.yml every test root starts with. Its services' ports come from a range of
    its pytest-xdist worker's own: roots on one host that share a first port (5433) would
    take each other's ports (a service stopped and started again found its port taken by
    another worker's new one), which a host's staging and production roots avoid the same
    way."""
    import yaml

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    first = 20000 + 500 * int(worker[2:]) if worker.startswith("gw") else 29500
    settings: dict = {"service_ports": f"{first}-{first + 499}"}
    if ssh is not None:
        settings["ssh"] = ssh
    root.mkdir(parents=True, exist_ok=True)
    (root / "gokku.yml").write_text(yaml.safe_dump(settings))


@pytest.fixture
def named_ports(gokku: "Gokku") -> None:
    """For tests of the port helpers that name their ports: no service_ports range."""
    (gokku.root / "gokku.yml").unlink()


@pytest.fixture
def state_owner() -> str | None:
    """The user owning the state root: the tests' own (None) unless a test names one with
    ``@pytest.mark.parametrize("state_owner", ["nobody"])``; root's CLI and doors then work
    on it as that user, as on a host ops/install set up (the sandbox refuses root)."""
    return None


@pytest.fixture
def state_parent(tmp_path: Path, state_owner: str | None) -> Iterator[Path]:
    """Where the state root lies: ``tmp_path``, or for another owner a directory of its
    own that this user can reach (``tmp_path`` is only its creator's)."""
    if state_owner is None:
        yield tmp_path
        return
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="gokku-owned-"))
    folder.chmod(0o755)
    shutil.chown(folder, state_owner, state_owner_group(state_owner))
    yield folder
    shutil.rmtree(folder)


def state_owner_group(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


@pytest.fixture
def gokku_python(state_owner: str | None) -> str:
    """The interpreter Gokku runs with: this one, which root's CLI can switch to the
    state's owner only if that user can run it (one in root's home it cannot)."""
    if state_owner is None or _reaches(state_owner, Path(sys.executable).resolve().parent):
        return sys.executable
    return _python_for_everyone()


def _reaches(user: str, path: Path) -> bool:
    """Whether ``user`` may walk to ``path``, by the rule root's CLI applies before it
    switches to the state's owner."""
    import pwd

    from gokku.cli import _reachable

    entry = pwd.getpwnam(user)
    return _reachable(path, entry.pw_uid, os.getgrouplist(user, entry.pw_gid))


@functools.cache
def _python_for_everyone() -> str:
    """A virtualenv of the system's interpreter of this version, in a directory every user
    can reach, that finds this one's packages: made once per test process."""
    import atexit
    import sysconfig
    import tempfile

    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    system = shutil.which(version, path="/usr/local/bin:/usr/bin:/bin")
    assert system, f"no {version} outside root's home for a state owned by another user"
    folder = Path(tempfile.mkdtemp(prefix="gokku-python-"))
    atexit.register(shutil.rmtree, folder, True)
    folder.chmod(0o755)
    subprocess.run([system, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = folder / "lib" / version / "site-packages"
    (site / "tests-packages.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return str(folder / "bin" / "python")


@pytest.fixture
def base_env(state_parent: Path) -> dict[str, str]:
    env = {
        key: value for key, value in os.environ.items() if not key.startswith(("GOKKU_", "PYTEST_"))
    }
    env["GOKKU_ROOT"] = str(state_parent / "root")
    env["PYTHONPATH"] = str(REPO)
    env["GOKKU_LOCK_TIMEOUT"] = "60"
    return env


@pytest.fixture
def gokku(base_env: dict[str, str], state_owner: str | None, gokku_python: str) -> Gokku:
    root = Path(base_env["GOKKU_ROOT"])
    write_settings(root)
    if state_owner is not None:
        for path in (root, root / "gokku.yml"):
            shutil.chown(path, state_owner, state_owner_group(state_owner))
    return Gokku(root, base_env, python=gokku_python)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class FakeGitHub:
    """Serves ``/OWNER/REPO/archive/REF.tar.gz`` the way GitHub does, from real git repos."""

    def __init__(self, folder: Path, url: str) -> None:
        self.folder = folder
        self.url = url

    def publish(self, owner: str, repo: str, tree: Path, ref: str = "HEAD") -> str:
        """Commit ``tree`` and serve its archive under REF; return the commit id."""
        git = ["git", "-C", str(tree), "-c", "user.email=t@example.com", "-c", "user.name=t"]
        if not (tree / ".git").exists():
            subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "publish"], check=True)
        commit = subprocess.run(
            [*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True
        ).stdout.strip()
        target = self.folder / owner / repo / "archive" / f"{ref}.tar.gz"
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "wb") as out:
            subprocess.run(
                [*git, "archive", "--format=tar.gz", f"--prefix={repo}-{commit[:7]}/", "HEAD"],
                check=True,
                stdout=out,
            )
        return commit

    def serve_file(self, relpath: str, data: bytes) -> str:
        target = self.folder / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        return f"{self.url}/{relpath}"


@pytest.fixture
def github(tmp_path: Path, base_env: dict[str, str]) -> Iterator[FakeGitHub]:
    folder = tmp_path / "github"
    folder.mkdir()
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    base_env["GOKKU_GITHUB_URL"] = url
    try:
        yield FakeGitHub(folder, url)
    finally:
        server.shutdown()
        server.server_close()


def write_plugin(
    path: Path,
    layout: str = "spec",
    namespace: str | None = None,
    commands: dict[str, str] | None = None,
    install: str = 'echo "installed $1"\n',
    uninstall: str = 'echo "uninstalled $1"\n',
) -> Path:
    """A plugin tree: ``spec`` keeps install/uninstall at the root, ``official`` in bin/."""
    scripts = {
        "commands/help": 'echo "help for $GOKKU_PLUGIN_NAME"\n',
        "commands/info": 'echo "info $1"\n',
        "commands/logs": 'echo "logs $*"\n',
        **(commands or {}),
    }
    where = "bin/" if layout == "official" else ""
    scripts[f"{where}install"] = install
    scripts[f"{where}uninstall"] = uninstall
    if namespace:
        scripts["commands/name"] = f'#!/bin/bash\necho "{namespace}"\n'
    for rel, body in scripts.items():
        target = path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(body if body.startswith("#!") else "#!/bin/bash\n" + body)
    return path


@pytest.fixture
def docker_standin(base_env: dict[str, str], tmp_path: Path) -> Path:
    """No Docker engine runs on these machines: put the small honest stand-in on PATH.

    It keeps containers as files (name, image, ports, state, start time) in the returned
    directory and answers the subset of the docker CLI the helpers and the spec's example
    plugin use.
    """
    bin_dir = tmp_path / "standin-bin"
    bin_dir.mkdir()
    shutil.copy(STANDINS / "docker", bin_dir / "docker")
    base_env["PATH"] = f"{bin_dir}:{base_env.get('PATH', '')}"
    return bin_dir / "docker-state"
