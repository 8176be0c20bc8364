"""``git-receive-pack`` and ``git-upload-pack``: what ``git push``, ``git fetch`` and
``git clone gokku@host:APP`` run over SSH. git itself speaks the protocol on the
request's streams, so stdout carries nothing else; Gokku's own lines go to stderr."""

from pathlib import Path

from gokku import access, apps, repos, runner
from gokku.cmdline import parse
from gokku.commands import usage_line
from gokku.context import Context
from gokku.names import app_of


def receive_pack(ctx: Context, args: list[str]) -> int:
    app = _app(args, "git-receive-pack")
    if not apps.exists(ctx.root, app):
        # The first push creates the app: that is an admin's to do.
        access.require_admin(ctx, f"create app {app!r} by pushing to it")
    access.require(ctx, "app", app, access.WRITE)
    if repos.ensure(ctx.root, app):
        ctx.info(f"Created app {app}")
    repo = ctx.root.repo(app)
    code = _git(ctx, "receive-pack", repo)
    if code == 0:
        repos.point_head(repo)
    return code


def upload_pack(ctx: Context, args: list[str]) -> int:
    app = _app(args, "git-upload-pack")
    access.require(ctx, "app", app, access.READ)
    return _git(ctx, "upload-pack", repos.require(ctx.root, app))


def _app(args: list[str], verb: str) -> str:
    opts = parse(args, usage_line(verb), min_args=1, max_args=1)
    return app_of(opts.positional[0])


def _git(ctx: Context, program: str, repo: Path) -> int:
    return runner.run(ctx, ["git", program, str(repo)], repo, runner.base_env(ctx))
