"""Errors that carry a user-facing message and the exit code it becomes.

Commands raise; exactly one place (``dispatcher.dispatch``) turns an error into a line
on stderr and an exit code, so every door reports failures the same way.
"""


class GokkuError(Exception):
    """An operation failed for a reason the user can act on (exit 1)."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UsageError(GokkuError):
    """Bad arguments, bad names, unbalanced quotes (exit 2)."""

    exit_code = 2


class UnknownCommand(GokkuError):
    """No built-in or plugin command by that name (exit 127, like a shell)."""

    exit_code = 127


class NotFound(GokkuError):
    """An app, service or plugin named by the user does not exist (exit 1).

    ``kind`` and ``name`` (an app or a service) let the dispatcher add a did-you-mean
    from the names the caller may see, and only those; ``plugin``: of that plugin's
    services only (``postgres:info cc`` means none of redis's)."""

    def __init__(self, message: str, kind: str = "", name: str = "", plugin: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.name = name
        self.plugin = plugin


class ScriptFailed(GokkuError):
    """A plugin script that Gokku ran on the user's behalf failed: keep its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class AuditFailed(GokkuError):
    """The audit line could not be written; the command it is about has already run."""


class InternalError(GokkuError):
    """An unexpected exception already logged with its traceback (``crashlog``), where the
    dispatcher would not log it: the message is the one line the user is told."""


class AccessDenied(NotFound):
    """The caller's key may not do this (exit 1); the audit line records the denial.

    A NotFound to the caller: for a member, an app it may not read and one that does
    not exist are the same, and the same did-you-mean (from what it may see) applies."""


def os_reason(exc: OSError) -> str:
    """What the system refused, lower-cased as our messages are: ``no space left on device``."""
    return (exc.strerror or str(exc) or type(exc).__name__).lower()


def system_error(exc: OSError) -> str:
    """``os_reason`` and the file it concerned, when the error names one."""
    return f"{os_reason(exc)}: {exc.filename}" if exc.filename else os_reason(exc)
