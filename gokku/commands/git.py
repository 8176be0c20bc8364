"""``git-receive-pack`` and ``git-upload-pack``: what ``git push``, ``git fetch`` and
``git clone gokku@host:APP`` run over SSH. git itself speaks the protocol on the
request's streams, so stdout carries nothing else; Gokku's own lines go to stderr.

A push deploys (``gokku.deploys``): the app's lock is taken before git advertises the
refs and held until receive-pack is done, and the repository's hooks call back into
``git-hook`` (a local verb) with the pusher's identity in their environment."""

import os
from pathlib import Path

from gokku import access, apps, deploys, repos, runner
from gokku.cmdline import parse
from gokku.commands import usage_line
from gokku.context import Context, Identity, replaced
from gokku.errors import UsageError
from gokku.names import app_of, check_name

# Set for git receive-pack when the push created the app: its pre-receive hook says so,
# on git's side band, where the client prefixes it with "remote:" like every line after.
CREATED = "GOKKU_CREATED_APP"


def receive_pack(ctx: Context, args: list[str]) -> int:
    app = _app(args, "git-receive-pack")
    # Write access first: a member pushing to an app it may not see is refused the same
    # way whether or not the app exists.
    access.require(ctx, "app", app, access.WRITE)
    if not apps.exists(ctx.root, app):
        # The first push creates the app: that is an admin's to do.
        access.require_admin(ctx, f"create app {app!r} by pushing to it")
    with deploys.locked(ctx, app, "git push"):
        created = {CREATED: app} if repos.ensure(ctx.root, app) else {}
        repo = ctx.root.repo(app)
        env = {**runner.base_env(ctx), **runner.callback_env(), "GOKKU_APP": app, **created}
        code = _git(ctx, "receive-pack", repo, env)
        if code == 0:
            repos.point_head(repo)
    return code


def upload_pack(ctx: Context, args: list[str]) -> int:
    app = _app(args, "git-upload-pack")
    access.require(ctx, "app", app, access.READ)
    repo = repos.require(ctx.root, app)
    return _git(ctx, "upload-pack", repo, runner.base_env(ctx))


def hook(ctx: Context, args: list[str]) -> int:
    """``git-hook pre-receive|post-receive APP``: what the repository's hooks run, with
    git's OLD NEW REF lines on stdin. Local only (the command table): the caller is the
    state's owner, so the identity it passes on (the pusher's key, which gokku's
    git-receive-pack put in the environment) is believed; triggers and records show it."""
    usage = usage_line("git-hook")
    opts = parse(args, usage, min_args=2, max_args=2)
    which, app = opts.positional[0], check_name("app", opts.positional[1])
    handlers = {"pre-receive": deploys.receive, "post-receive": deploys.received}
    if which not in handlers:
        raise UsageError(f"unknown hook {which!r}; usage: {usage}")
    updates = [
        deploys.Update(*line.split())
        for line in ctx.request.stdin.read().decode().splitlines()
        if len(line.split()) == 3
    ]
    if which == "pre-receive" and os.environ.get(CREATED) == app:
        ctx.info(f"Created app {app}")  # from the hook: git shows it as remote: -----> ...
    handlers[which](_as_pusher(ctx), app, updates)
    return 0


def _as_pusher(ctx: Context) -> Context:
    ours = ctx.request.identity
    pusher = Identity(
        name=os.environ.get("GOKKU_KEY_NAME") or ours.name,
        fingerprint=os.environ.get("GOKKU_KEY_FINGERPRINT", ours.fingerprint),
        role=os.environ.get("GOKKU_ROLE") or ours.role,
        remote=os.environ.get("GOKKU_REMOTE_ADDR", ours.remote),
    )
    return replaced(ctx, request=replaced(ctx.request, identity=pusher))


def _app(args: list[str], verb: str) -> str:
    opts = parse(args, usage_line(verb), min_args=1, max_args=1)
    return app_of(opts.positional[0])


def _git(ctx: Context, program: str, repo: Path, env: dict[str, str]) -> int:
    return runner.run(ctx, ["git", program, str(repo)], repo, env)
