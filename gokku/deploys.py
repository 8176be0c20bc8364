"""Deploying an app: the plugins' push triggers, run on a revision under the app's lock.

Gokku is no PaaS; it gives plugins the moment to be one. Triggers are scripts in a
plugin's ``hooks/`` (found like ``hooks/post-link``), run for every installed plugin that
has them, in plugin-name order, with the app's lock held:

- ``pre-receive APP OLDREV NEWREV REFNAME`` for every ref a push updates: may refuse it;
- ``deploy APP REV`` in ``GOKKU_SOURCE_DIR``, a clean checkout of REV (removed after),
  with the path of the app's ``.env`` in ``GOKKU_APP_ENV_FILE`` (its variables are in no
  trigger's environment: the app's code gets them from ``run_in_sandbox``): the build;
- ``post-deploy APP REV`` once the deploy branch points at REV.

A push runs them from git's own hooks (``gokku git-hook``): pre-receive runs before any
ref moves and a failure rejects the push, so the refs move only when every pre-receive
and deploy trigger succeeded (Dokku's semantics), and everything they print reaches the
pusher as git's ``remote:`` lines. ``apps:deploy`` runs the same deploy outside a push.

One lock, the app's, is held from before git advertises the refs until after they moved:
a second push (or a ``config:set``) waits, and the branch can never point at one revision
while another one is the last build. Only the app's deploy branch deploys (``main`` or
``master`` unless set with ``apps:deploy-set``); other refs are stored.
"""

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from gokku import apps, deploylog, repos
from gokku.context import Context
from gokku.errors import GokkuError, NotFound, ScriptFailed, UsageError
from gokku.plugins import registry
from gokku.runner import run_script
from gokku.storage import read_json, remove_tree, temp_dir, write_json

ZERO = "0" * 40
DEFAULT_WAIT = 600.0  # seconds a deploy waits for the one before it
SETTINGS = "settings.json"
SETTING_KEYS = ("branch", "wait")


class Update(NamedTuple):
    """One line of what git feeds pre-receive and post-receive: OLD NEW REF."""

    old: str
    new: str
    ref: str


def settings(ctx: Context, app: str) -> dict[str, str | float]:
    path = deploylog.folder(ctx.root, app) / SETTINGS
    return read_json(path) if path.is_file() else {}


def set_setting(ctx: Context, app: str, key: str, value: str | None) -> str | float | None:
    """Set ``branch`` (a branch name) or ``wait`` (seconds); None goes back to the default.
    Returns the value stored."""
    stored: str | float | None = value
    if key == "branch" and value is not None:
        if value.startswith("-") or not repos.git(
            "check-ref-format", "--branch", value, check=False
        ):
            raise UsageError(f"invalid branch name {value!r}")
    elif key == "wait" and value is not None:
        try:
            stored = float(value)
        except ValueError:
            stored = -1.0
        if not 0 <= stored < float("inf"):
            raise UsageError(f"wait must be a number of seconds, not {value!r}")
    elif key not in SETTING_KEYS:
        raise UsageError(f"unknown setting {key!r}: use one of {', '.join(SETTING_KEYS)}")
    with apps.app_lock(ctx.root, app):
        apps.require(ctx.root, app)
        current = {k: v for k, v in settings(ctx, app).items() if k != key}
        if stored is not None:
            current[key] = stored
        place = deploylog.folder(ctx.root, app)
        place.mkdir(mode=0o700, exist_ok=True)
        write_json(place / SETTINGS, current)
    return stored


def deploy_branch(ctx: Context, app: str, pushed: list[str] | None = None) -> str:
    """The branch that deploys: the one set, else ``main`` or ``master`` (main first),
    whichever the repository has, else whichever is being pushed. A repository that has
    ``master`` keeps deploying it when a ``main`` comes along."""
    chosen = settings(ctx, app).get("branch")
    if chosen:
        return str(chosen)
    repo = ctx.root.repo(app)
    heads = repos.git("for-each-ref", "--format=%(refname:short)", "refs/heads", cwd=repo)
    for present in (heads.split(), pushed or []):
        found = [name for name in repos.PREFERRED_HEADS if name in present]
        if found:
            return found[0]
    return repos.PREFERRED_HEADS[0]


@contextlib.contextmanager
def locked(ctx: Context, app: str, doing: str) -> Iterator[None]:
    """The app's lock for a deploy: a wait says who holds it, and gives up after the app's
    ``wait`` setting (DEFAULT_WAIT) with an error naming the holder."""
    wait = float(settings(ctx, app).get("wait", DEFAULT_WAIT))
    holder = f"{doing} by {ctx.request.identity.name} since {time.strftime('%H:%M:%S')}"

    def waiting(who: str) -> None:
        ctx.info(f"{app} is busy ({who}): waiting up to {wait:g} s")

    with apps.app_lock(ctx.root, app, holder, wait, waiting):
        yield


def triggers(ctx: Context, name: str) -> list[tuple[registry.Plugin, Path]]:
    """Every enabled plugin's ``hooks/NAME``, in plugin-name order."""
    enabled = (plugin for plugin in registry.installed(ctx.root) if not plugin.disabled)
    found = ((plugin, plugin.hook(name)) for plugin in enabled)
    return [(plugin, script) for plugin, script in found if script is not None]


def receive(ctx: Context, app: str, updates: list[Update]) -> None:
    """git's pre-receive: refuse or deploy, before any ref moves. Runs inside the hook, in
    the process group of ``git receive-pack`` (see ``runner.run``)."""
    with locked(ctx, app, "git push"):  # gokku's git-receive-pack holds it: passes through
        pushed = [u.ref.removeprefix("refs/heads/") for u in updates if u.new != ZERO]
        branch = deploy_branch(ctx, app, pushed)
        deploying = [u for u in updates if u.ref == f"refs/heads/{branch}"]
        if deploying and deploying[0].new == ZERO:
            raise GokkuError(f"{branch} is the branch {app} deploys: it cannot be deleted")
        try:
            for update in updates:
                for plugin, script in triggers(ctx, "pre-receive"):
                    _run(ctx, app, plugin, script, [update.old, update.new, update.ref], False)
        except ScriptFailed as exc:
            raise ScriptFailed(f"push to {app} refused: {exc.message}", exc.exit_code) from None
        for update in updates:
            if update not in deploying:
                ctx.info(f"{update.ref} stored, not deployed ({app} deploys {branch})")
            elif not deploy(ctx, app, update.new, branch, own_group=False):
                ctx.info(f"{branch} stored: no installed plugin has a deploy trigger")


def received(ctx: Context, app: str, updates: list[Update]) -> None:
    """git's post-receive: the refs moved; post-deploy for the revision just deployed."""
    with locked(ctx, app, "git push"):
        branch = f"refs/heads/{deploy_branch(ctx, app)}"
        for update in updates:
            if update.ref == branch and update.new != ZERO:
                after_deploy(ctx, app, update.new, own_group=False)


def redeploy(ctx: Context, app: str, wanted: str | None) -> None:
    """``apps:deploy APP [REV]`` (Dokku's ps:rebuild): build the deploy branch's revision
    again, or REV, and then point the branch at REV, so that the branch and the last
    build still agree (a rollback). The caller holds the app's lock."""
    repo = repos.require(ctx.root, app)
    branch = deploy_branch(ctx, app)
    current = _commit(repo, f"refs/heads/{branch}")
    rev = current if wanted is None else _commit(repo, wanted)
    if wanted is not None and not rev:
        raise NotFound(f"no commit {wanted!r} in the repository of app {app!r}")
    if not rev:
        raise NotFound(f"nothing was pushed to {branch}, the branch app {app!r} deploys")
    if not deploy(ctx, app, rev, branch, own_group=True):
        raise GokkuError("no installed plugin has a deploy trigger: nothing to deploy")
    if rev != current:
        repos.git("update-ref", f"refs/heads/{branch}", rev, current or ZERO, cwd=repo)
        ctx.info(f"{branch} of {app} now points at {rev[:12]}")
    after_deploy(ctx, app, rev, own_group=True)


def _commit(repo: Path, rev: str) -> str:
    """The commit ``rev`` names, or "" (never an option: --end-of-options)."""
    found = repos.git(
        "rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", cwd=repo,
        check=False,
    )  # fmt: skip
    return found.strip()


def deploy(ctx: Context, app: str, rev: str, branch: str, own_group: bool) -> bool:
    """Run every deploy trigger on a checkout of ``rev``, recorded; False when no plugin
    has one (nothing is recorded then). A failure raises ScriptFailed with the trigger's
    exit code; whatever the triggers built before stays their business, the ref does not
    move."""
    builds = triggers(ctx, "deploy")
    if not builds:
        return False
    ctx.info(f"Deploying {rev[:12]} ({branch}) to {app}")
    try:
        with deploylog.recording(ctx, app, rev, branch) as log, _checkout(ctx, app, rev) as src:
            for plugin, script in builds:
                log.say(f"{plugin.name}: deploy")
                extra = {"GOKKU_SOURCE_DIR": str(src), "GOKKU_REV": rev}
                _run(log.ctx, app, plugin, script, [rev], own_group, src, extra)
    except ScriptFailed as exc:
        raise ScriptFailed(
            f"deploy of {rev[:12]} to {app} failed: {exc.message}; nothing changed "
            f"(see: gokku apps:deploy-log {app})",
            exc.exit_code,
        ) from None
    ctx.info(f"Deployed {rev[:12]} to {app}")
    return True


def after_deploy(ctx: Context, app: str, rev: str, own_group: bool) -> None:
    """post-deploy triggers, when the last deploy was of ``rev`` and succeeded (a push
    that deployed nothing has nothing to follow); their output goes to its log."""
    done = deploylog.records(ctx.root, app)
    last = done[-1] if done else {}
    if last.get("rev") != rev or last.get("result") != deploylog.SUCCEEDED:
        return
    with deploylog.appending(ctx, app, int(last["number"])) as log:
        for plugin, script in triggers(ctx, "post-deploy"):
            log.say(f"{plugin.name}: post-deploy")
            try:
                _run(log.ctx, app, plugin, script, [rev], own_group)
            except ScriptFailed as exc:
                message = f"{exc.message}; the deploy of {rev[:12]} stands"
                raise ScriptFailed(message, exc.exit_code) from None


def _run(
    ctx: Context,
    app: str,
    plugin: registry.Plugin,
    script: Path,
    args: list[str],
    own_group: bool,
    cwd: Path | None = None,
    extra: dict[str, str] | None = None,
) -> None:
    """One trigger: ``script APP ARGS...``, in GOKKU_ROOT unless ``cwd``. The app's
    variables are not in its environment (PS4, LD_PRELOAD or GOKKU_REMOTE there would be
    the pusher's code running as the server): they are in GOKKU_APP_ENV_FILE, and
    ``run_in_sandbox`` gives them to the app's own code."""
    env = {
        "GOKKU_APP": app,
        "GOKKU_APP_DIR": str(ctx.root.app_dir(app)),
        "GOKKU_APP_ENV_FILE": str(ctx.root.env_file(app)),
        **(extra or {}),
    }
    where = cwd or ctx.root.path
    code = run_script(ctx, plugin, script, [app, *args], env, cwd=where, own_group=own_group)
    if code != 0:
        raise ScriptFailed(f"{plugin.name} {script.name} exited {code}", code)


@contextlib.contextmanager
def _checkout(ctx: Context, app: str, rev: str) -> Iterator[Path]:
    """A clean checkout of ``rev`` (what git's checkout writes, filters and modes included;
    submodules not) in a temporary directory under the app's deploy folder, removed after.
    Inside a pre-receive hook the pushed objects are still in git's quarantine; the
    environment git gave the hook points there, and ``repos.git`` passes it on. Leftovers
    of a deploy killed outright are removed by the next one (same lock: none is in use)."""
    place = deploylog.folder(ctx.root, app)
    for stale in place.glob("checkout-*"):
        remove_tree(stale)
    work = temp_dir(place, "checkout-")
    try:
        source = work / "source"
        source.mkdir()
        env = {
            "GIT_DIR": str(ctx.root.repo(app)),  # a hook's GIT_DIR is relative: "."
            "GIT_INDEX_FILE": str(work / "index"),
            "GIT_WORK_TREE": str(source),
        }
        repos.git("read-tree", rev, env=env)
        repos.git("checkout-index", "--all", "--force", env=env, cwd=source)
        (work / "index").unlink()
        yield source
    finally:
        remove_tree(work)
