"""``serve`` (the embedded SSH server), ``ssh-command`` (where both SSH doors end) and
``whoami``."""

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from gokku import audit, keys
from gokku.cmdline import is_number, parse
from gokku.commands import usage_line
from gokku.commands.keys import grants_text
from gokku.context import Context, Identity, Request
from gokku.errors import AuditFailed, GokkuError, InternalError, UsageError
from gokku.paths import Root
from gokku.ssh import split_command
from gokku.ssh.config import load as load_config

HANGUP_EXIT = 128 + signal.SIGHUP


def serve(ctx: Context, args: list[str]) -> int:
    usage = usage_line("serve")
    opts = parse(args, usage, values={"--host": "host", "--port": "port"}, max_args=0)
    config = load_config(ctx.root)
    overrides: dict[str, object] = {}
    if opts.get("host"):
        overrides["host"] = opts.get("host")
    if opts.get("port") is not None:
        port = opts.get("port") or ""
        if not is_number(port) or int(port) > 65535:
            raise UsageError(f"--port must be a number from 0 to 65535; usage: {usage}")
        overrides["port"] = int(port)
    from gokku.commands.doctor import report_cheap
    from gokku.ssh import server

    report_cheap(ctx)
    return server.serve(ctx, config._replace(**overrides))


class _HungUp(BaseException):
    """The client went away while no plugin script was running (the runner handles it then)."""


@contextlib.contextmanager
def _hang_up_raises() -> Iterator[None]:
    def handler(_signum: int, _frame: object) -> None:
        raise _HungUp

    signal.signal(signal.SIGHUP, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # the audit line must still be written


def ssh_command(ctx: Context, args: list[str]) -> int:
    """Run ``$SSH_ORIGINAL_COMMAND`` for the key with ``--fingerprint``; log it to the audit log.

    Every command gets exactly one audit line, whether it is refused, fails, crashes or
    succeeds, and whatever bytes it holds; an internal error's traceback goes to the log
    of the root served (``--root``: under sshd the login user's default root is not it).

    sshd runs this as the forced command of every key line it got from the registry; the
    embedded server runs it for every session, with the same environment sshd would set.
    The key is looked up by the fingerprint that logged in, at every command: a removed key
    gets nothing more, even on a connection still open, and neither does a key whose name
    was given to another. (``--key NAME`` is what authorized_keys lines written before
    fingerprints said: it is honoured once, while the registry is rewritten, lines
    included; a ``--key`` line left after that is refused.)
    """
    usage = usage_line("ssh-command")
    values = {"--key": "key", "--fingerprint": "fingerprint", "--root": "root"}
    opts = parse(args, usage, values=values, max_args=0)
    if bool(opts.get("key")) == bool(opts.get("fingerprint")):
        raise UsageError(f"give --fingerprint FP; usage: {usage}")
    root = Root(Path(opts.get("root") or "").absolute()) if opts.get("root") else ctx.root
    entry = _entry(opts.get("fingerprint") or "")
    from gokku.ssh import handover

    global _line_taken
    _line_taken = True
    started = time.monotonic()
    handover.begin(entry, started)
    try:
        return _run(ctx, root, opts.get("key"), entry)
    except GokkuError as exc:
        entry.exit = exc.exit_code
        raise
    except Exception as exc:  # logged under the root served, not the login user's default
        entry.exit = 1
        from gokku import crashlog

        raise InternalError(crashlog.unexpected(root, entry.argv or [], exc)) from exc
    finally:
        entry.duration = round(time.monotonic() - started, 3)
        # The server worker writes it, with the bytes it relayed; else (no zygote to pass
        # it on) it is written here.
        if not (handover.active() and handover.finish(entry)):
            _audit(ctx, root, entry)


# Whether ``ssh_command`` ran far enough to write its command's audit line (it does,
# whatever happens next); until then ``owed_line`` writes one.
_line_taken = False


def _entry(fingerprint: str) -> audit.Entry:
    """The audit line of this session's command, before anything is known but what sshd
    (or the embedded server, the same way) said."""
    remote = (os.environ.get("SSH_CONNECTION") or os.environ.get("SSH_CLIENT") or "").split()
    return audit.Entry("", fingerprint, remote[0] if remote else "", None, pty=os.isatty(0))


def owed_line(root: Root, fingerprint: str, code: int) -> None:
    """The audit line of an ``ssh-command`` whose own code never ran (it crashed, or was
    refused, on the way there): the command as it came and the fingerprint that logged
    in, escaped like every line. A command gets exactly one line, whatever happened."""
    if _line_taken:
        return
    entry = _entry(fingerprint)
    with contextlib.suppress(UsageError):  # a string that does not split: no argv
        entry.argv = audit.redacted(split_command(os.environ.get("SSH_ORIGINAL_COMMAND", "")))
    entry.exit = code
    with contextlib.suppress(AuditFailed):  # the client has had its line on stderr
        audit.write(root, entry)


def _run(ctx: Context, root: Root, legacy: str | None, entry: audit.Entry) -> int:
    """Split the command, find the key, dispatch; fill in ``entry`` as each is known."""
    from gokku.commands.keys import upgraded
    from gokku.dispatcher import dispatch
    from gokku.ssh import handover
    from gokku.ssh.relay import relayed

    try:
        argv, unsplit = split_command(os.environ.get("SSH_ORIGINAL_COMMAND", "")), None
        entry.argv = audit.redacted(argv)
    except UsageError as exc:  # reported once the key is known, for the line to name it
        argv, unsplit = [], exc
    if legacy:
        key = next((k for k in upgraded(Context(ctx.request, root)) if k.name == legacy), None)
    else:
        key = keys.by_fingerprint(root, entry.fingerprint)
    if key is None:
        entry.denied = "this key is no longer registered (see: gokku ssh-keys:list)"
        raise GokkuError(entry.denied)
    entry.key, entry.fingerprint = key.name, key.fingerprint
    if unsplit is not None:
        raise unsplit
    identity = Identity.of_key(key, entry.remote)
    code = HANGUP_EXIT
    request = counts = None
    try:
        streaming = handover.direct() if handover.active() else relayed()
        with _hang_up_raises(), streaming as streams:
            if not handover.active():  # sshd's door: the embedded server counts its own
                _take_session_slot(root, key)
            counts = streams.counts
            term = os.environ.get("TERM") if entry.pty else None
            streams_ = (streams.stdin, streams.stdout, streams.stderr)
            request = Request(argv, identity, *streams_, term=term)
            code = dispatch(request, root)
    except _HungUp:
        pass
    finally:
        entry.denied = request.denied if request is not None else None
        if counts is not None:
            entry.bytes_in, entry.bytes_out = counts.bytes_in, counts.bytes_out
    entry.exit = code
    return code


def _take_session_slot(root: Root, key: keys.Key) -> None:
    """One of the key's session slots (``gokku.sessions``), held until this process ends;
    a member key gets no more than ``max_sessions_per_key``, as on the embedded server."""
    from gokku import sessions
    from gokku.access import ADMIN

    cap = None if key.role == ADMIN else load_config(root).max_sessions_per_key
    sessions.take(root, key.fingerprint, key.name, cap)


def _audit(ctx: Context, root: Root, entry: audit.Entry) -> None:
    """Write the audit line; when it cannot be written, say so and leave the command's
    exit code alone (a read that succeeded must not fail because the log disk is full)."""
    try:
        audit.write(root, entry)
    except AuditFailed as exc:
        ctx.warn(exc.message)  # dropped when the client is gone


def whoami(ctx: Context, args: list[str]) -> int:
    usage = usage_line("whoami")
    opts = parse(args, usage, values={"--format": "format"}, max_args=0)
    ident = ctx.request.identity
    fields = {
        "name": ident.name,
        "fingerprint": ident.fingerprint,
        "role": ident.role,
        "grants": dict(sorted(ident.grants.items())),
        "remote": ident.remote,
    }
    if opts.get("format", ctx.format) == "json":
        ctx.out_json(fields)
        return 0
    for label, value in fields.items():
        if label == "grants":
            value = "(everything)" if ident.role == "admin" else grants_text(ident.grants)
        ctx.out(f"{label + ':':13}{value}")
    return 0
