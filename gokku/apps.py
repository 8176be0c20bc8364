"""Apps and their variables (``apps/APP/ENV/.env``).

Every change to an app's files happens under the app's lock and is written atomically,
so concurrent ``config:set`` calls of different keys all land.
"""

import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from gokku import envfile
from gokku.errors import GokkuError, NotFound
from gokku.names import check_name
from gokku.paths import Root
from gokku.storage import lock, write_atomic

DEFAULT_ENV = "shared"


@contextmanager
def app_lock(
    root: Root,
    app: str,
    holder: str = "",
    timeout: float | None = None,
    waiting: Callable[[str], None] | None = None,
) -> Iterator[None]:
    """The app's one lock: its files, its links and its deploys (see ``storage.lock``)."""
    with lock(root.locks, f"app-{check_name('app', app)}", holder, timeout, waiting):
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


def create(root: Root, app: str) -> None:
    check_name("app", app)
    with app_lock(root, app):
        if exists(root, app):
            raise GokkuError(f"app {app!r} already exists")
        (root.app_dir(app) / DEFAULT_ENV).mkdir(parents=True)


def destroy(root: Root, app: str) -> None:
    """Remove the app's directory and repository (links are the caller's business)."""
    with app_lock(root, app):
        require(root, app)
        shutil.rmtree(root.app_dir(app))
        shutil.rmtree(root.repo(app), ignore_errors=True)


def losses(root: Root, app: str) -> list[str]:
    """What destroying the app deletes, in words (for the question before it)."""
    path = require(root, app)
    count = sum(len(read_env(root, app, env.name)) for env in path.iterdir() if env.is_dir())
    lost = [f"its variables ({count} in {len(list(path.iterdir()))} environment(s))"]
    if root.repo(app).is_dir():
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
