"""An app's git repository (``repos/APP.git``): where ``git push gokku@host:APP`` lands.

The first push to an app creates it, as with Dokku. The bare repository is made under the
app's lock in a staging directory and renamed into place, so two first pushes at once
create it once and a failed creation leaves nothing behind.

Its ``pre-receive`` and ``post-receive`` hooks call back into gokku (``git-hook``), which
runs the plugins' deploy triggers (``gokku.deploys``): git runs pre-receive before any ref
moves and rejects the push when it fails, which is Dokku's semantics for a failed deploy.
The hooks are rewritten at every push, so repositories made by an older gokku get them.

A repository belongs to one incarnation of its app (``apps.REPO_ID_FILE`` holds the app's
id): one left by a destroy that was cut off is never served, and is removed before the
next push to an app of that name.
"""

import os
import subprocess
from pathlib import Path

from gokku import apps
from gokku.errors import GokkuError, NotFound
from gokku.paths import Root
from gokku.storage import remove_tree, temp_dir, write_atomic

# Branches a clone should check out, in order of preference, once something is pushed.
PREFERRED_HEADS = ("main", "master")
HOOKS = ("pre-receive", "post-receive")
# The same script for both hooks. It finds gokku through the environment that gokku's
# own git-receive-pack gives git (``runner.callback_env``): a push that did not come
# through gokku (git push straight into the directory) would deploy without the app's
# lock, so it is refused.
HOOK_SCRIPT = b"""#!/bin/sh
# Written by gokku at every push: runs the plugins' deploy triggers (gokku git-hook).
if [ -z "${GOKKU_PYTHON:-}" ] || [ -z "${GOKKU_APP:-}" ]; then
  echo " !     push through gokku (git push gokku@HOST:APP), not into this directory" >&2
  exit 1
fi
exec env PYTHONPATH="$GOKKU_PYTHONPATH" "$GOKKU_PYTHON" -P -m gokku.callback git-hook \\
  "$(basename "$0")" "$GOKKU_APP"
"""


def require(root: Root, app: str) -> Path:
    apps.require(root, app)
    repo = root.repo(app)
    if not repo.is_dir() or apps.orphan_repo(root, app):
        raise NotFound(f"nothing has been pushed to app {app!r} yet")
    return repo


def ensure(root: Root, app: str) -> bool:
    """Make sure the app and its repository exist, with gokku's hooks in it; True when the
    app was created."""
    with apps.app_lock(root, app):
        created = not apps.exists(root, app)
        if created:
            apps.create(root, app)
        apps.clear_leftovers(root, app)  # a repository of an earlier app of this name
        repo = root.repo(app)
        if not repo.is_dir():
            _init_bare(repo, apps.incarnation(root, app) or apps.LEGACY)
        for name in HOOKS:
            path = repo / "hooks" / name
            if not path.is_file() or path.read_bytes() != HOOK_SCRIPT:
                path.parent.mkdir(exist_ok=True)
                write_atomic(path, HOOK_SCRIPT, 0o755)
    return created


def _init_bare(repo: Path, incarnation: str) -> None:
    repo.parent.mkdir(parents=True, exist_ok=True)
    staging = temp_dir(repo.parent, f".{repo.name}.")
    try:
        git("init", "--bare", "--quiet", str(staging))
        if incarnation != apps.LEGACY:
            write_atomic(staging / apps.REPO_ID_FILE, incarnation.encode() + b"\n", 0o644)
        os.rename(staging, repo)
    except BaseException:
        remove_tree(staging)
        raise


def point_head(repo: Path) -> None:
    """After a push: if HEAD names a branch that does not exist (a new repository's
    default), point it at the pushed branch, so that a clone checks that out."""
    if git("rev-parse", "--verify", "--quiet", "HEAD", cwd=repo, check=False):
        return
    heads = git("for-each-ref", "--format=%(refname:short)", "refs/heads", cwd=repo).split()
    if heads:
        chosen = next((name for name in PREFERRED_HEADS if name in heads), heads[0])
        git("symbolic-ref", "HEAD", f"refs/heads/{chosen}", cwd=repo)


def git(
    *args: str, cwd: Path | None = None, check: bool = True, env: dict[str, str] | None = None
) -> str:
    """Run a git plumbing command; its stdout, or "" when it failed and ``check`` is off.
    ``env`` is added to ours (inside a hook, ours holds git's view of the pushed objects)."""
    full_env = {**os.environ, **env} if env else None
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=full_env)
    except FileNotFoundError:
        raise GokkuError("git is not installed on this server") from None
    if done.returncode != 0:
        if not check:
            return ""
        message = done.stderr.strip().splitlines()[-1:] or [f"exit {done.returncode}"]
        raise GokkuError(f"git {args[0]} failed: {message[0]}")
    return done.stdout
