"""Apps and their variables (``apps/APP/ENV/.env``).

Every change to an app's files happens under the app's lock and is written atomically,
so concurrent ``config:set`` calls of different keys all land.

Each app is one incarnation of its name: ``apps/APP/.id`` holds a random id, written with
the directory in one rename. Grants and the app's repository record that id, so nothing
made later under the same name inherits them, whatever a killed destroy left behind. An
app made before ids existed has none (its incarnation is ``LEGACY``): every app made
since has one, so only that same app can match something recorded without an id.

A destroy first renames the directory to a tombstone (``apps/.destroyed-APP.*``): from
that one step on the app is gone. Deleting the tombstone and the repository follows;
what a killed destroy leaves is finished by its rerun, the next create of the name, or
``gokku doctor --fix`` (``leftover_destroys``).
"""

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gokku import access, envfile
from gokku.errors import GokkuError, NotFound
from gokku.names import check_name, new_id
from gokku.paths import Root
from gokku.storage import fsync_dir, lock, remove_tree, temp_dir, write_atomic

DEFAULT_ENV = "shared"
ID_FILE = ".id"
LEGACY = ""  # the incarnation of an app or service made before ids existed
REPO_ID_FILE = "gokku-app-id"  # in repos/APP.git: the incarnation it was pushed to


@contextmanager
def app_lock(
    root: Root,
    app: str,
    holder: str = "",
    timeout: float | None = None,
    waiting: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """The app's one lock: its files, its links and its deploys (see ``storage.lock``);
    held only by a command whose access holds on the app under the name now."""
    with lock(root.locks, f"app-{check_name('app', app)}", holder, timeout, waiting):
        access.hold_decision("app", app, lambda: incarnation(root, app))
        yield


def exists(root: Root, app: str) -> bool:
    return root.app_dir(app).is_dir()


def require(root: Root, app: str) -> Path:
    path = root.app_dir(app)
    if not path.is_dir():
        raise NotFound(
            f"app {app!r} does not exist (create it with: gokku apps:create {app})", "app", app
        )
    return path


def names(root: Root) -> list[str]:
    if not root.apps.is_dir():
        return []
    return sorted(p.name for p in root.apps.iterdir() if p.is_dir() and not p.name.startswith("."))


def envs(root: Root, app: str) -> list[str]:
    """The app's environments: its subdirectories, but not its own records (``.deploys``)."""
    path = require(root, app)
    return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def incarnation(root: Root, app: str) -> str | None:
    """The id of the app now under this name; None when there is none, LEGACY when it
    was made before ids existed."""
    try:
        return (root.app_dir(app) / ID_FILE).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return LEGACY if exists(root, app) else None


def create(root: Root, app: str) -> None:
    """Make the app's directory, its default environment and its id in one rename, after
    finishing what an earlier destroy of the name left behind."""
    check_name("app", app)
    with app_lock(root, app):
        if exists(root, app):
            raise GokkuError(f"app {app!r} already exists")
        clear_leftovers(root, app)
        root.apps.mkdir(parents=True, exist_ok=True)
        staging = temp_dir(root.apps, f".creating-{app}.")
        try:
            staging.chmod(0o755)
            (staging / DEFAULT_ENV).mkdir()
            write_atomic(staging / ID_FILE, new_id().encode() + b"\n", 0o644)
            os.rename(staging, root.app_dir(app))
        except BaseException:
            remove_tree(staging)
            raise
        fsync_dir(root.apps)


def destroy(root: Root, app: str) -> None:
    """Remove the app's directory and repository (links are the caller's business): the
    directory goes to a tombstone in one rename, then everything is deleted."""
    with app_lock(root, app):
        require(root, app)
        tomb = temp_dir(root.apps, f".destroyed-{app}.")
        os.rename(root.app_dir(app), tomb / "app")
        fsync_dir(root.apps)
        clear_leftovers(root, app)


def clear_leftovers(root: Root, app: str) -> list[str]:
    """Delete what destroys (and creates) of APP cut off left behind: its tombstones and
    staging, and a repository that no app of that name owns now. The caller holds the
    app's lock. Returns what it removed."""
    done = []
    if root.repos.is_dir() and orphan_repo(root, app):
        tomb = temp_dir(root.repos, f".destroyed-{app}.")
        os.rename(root.repo(app), tomb / "repo")
        fsync_dir(root.repos)
        done.append(f"repos/{root.repo(app).name}")
    for parent, pattern in _LEFTOVERS:
        for path in sorted(parent(root).glob(pattern % app)) if parent(root).is_dir() else []:
            remove_tree(path)
            done.append(f"{path.parent.name}/{path.name}")
    return done


# Where tombstones and staging are kept (names never hold a dot: ".destroyed-a." is
# app a's, never app a-b's).
_LEFTOVERS: list[tuple[Callable[[Root], Path], str]] = [
    (lambda root: root.apps, ".destroyed-%s.*"),
    (lambda root: root.repos, ".destroyed-%s.*"),
    (lambda root: root.apps, ".creating-%s.*"),
]


def orphan_repo(root: Root, app: str) -> bool:
    """Whether repos/APP.git is there for an incarnation of APP that is gone: no app has
    the name, or the repository names another id. One without an id (made before ids)
    belongs to the app of its name: every create clears an orphan before the new app
    appears, so it can only be that app's."""
    if not root.repo(app).is_dir():
        return False
    current = incarnation(root, app)
    try:
        stored = (root.repo(app) / REPO_ID_FILE).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return current is None
    return stored != current


def leftover_destroys(root: Root) -> list[tuple[str, Callable[[], str]]]:
    """What killed destroys left (message, repair), for ``gokku doctor``: tombstones and
    repositories whose app is gone or made again since."""
    found: dict[str, list[str]] = {}
    for parent, pattern in _LEFTOVERS:
        for path in sorted(parent(root).glob(pattern % "*")) if parent(root).is_dir() else []:
            name = path.name[len(pattern.split("%")[0]) :].split(".")[0]
            found.setdefault(name, []).append(f"{path.parent.name}/{path.name}")
    for path in sorted(root.repos.glob("*.git")) if root.repos.is_dir() else []:
        name = path.name.removesuffix(".git")
        with contextlib.suppress(GokkuError):
            if orphan_repo(root, check_name("app", name)):
                found.setdefault(name, []).append(f"repos/{path.name}")
    return [
        (
            f"{', '.join(paths)}: left by a destroy or create of app {name} that was cut off",
            lambda name=name: _finish_locked(root, name),
        )
        for name, paths in sorted(found.items())
    ]


def _finish_locked(root: Root, app: str) -> str:
    with app_lock(root, app):
        return f"removed {', '.join(clear_leftovers(root, app)) or 'nothing (already done)'}"


def losses(root: Root, app: str) -> list[str]:
    """What destroying the app deletes, in words (for the question before it)."""
    names = envs(root, app)
    count = sum(len(read_env(root, app, env)) for env in names)
    lost = [f"its variables ({count} in {len(names)} environment(s))"]
    if root.repo(app).is_dir() and not orphan_repo(root, app):
        lost.append(f"the code pushed to it ({root.repo(app).name})")
    return lost


def read_env(root: Root, app: str, env: str = DEFAULT_ENV) -> dict[str, str]:
    return _env_file(root, app, env).values


def _env_file(root: Root, app: str, env: str) -> envfile.EnvFile:
    path = root.env_file(app, env)
    # Bytes, then text: a text-mode read turns a CR in a quoted value into a newline.
    text = path.read_bytes().decode("utf-8") if path.is_file() else ""
    return envfile.parse(text, source=str(path))


def update_env(
    root: Root, app: str, env: str, change: Callable[[dict[str, str]], None]
) -> dict[str, str]:
    """Read-modify-write the app's .env under its lock; ``change`` edits the dict in place
    (and may refuse: it runs under the lock, so what it checks stays true for the write).
    The file keeps its comments and untouched lines (``envfile``). The app must exist when
    the lock is held: a destroy that got there first is not undone."""
    with app_lock(root, app):
        require(root, app)
        current = _env_file(root, app, env)
        values = current.values
        change(values)
        if values != current.values:
            text = current.render(values)
            path = root.env_file(app, env)
            path.parent.mkdir(exist_ok=True)
            write_atomic(path, text.encode("utf-8"), 0o600)
        return values
