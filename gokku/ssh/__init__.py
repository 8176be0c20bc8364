"""The SSH doors: the embedded asyncssh server (``gokku serve``) and the OpenSSH
forced-command door (``gokku ssh-command``). Both end in ``ssh-command``, which turns the
command string into argv, the key into an identity, and calls the dispatcher.

Nothing here imports asyncssh; ``gokku.ssh.server`` does, and only ``serve`` loads it.
"""

import shlex
import sys

from gokku.errors import UsageError


def gokku_argv(module: str = "gokku") -> list[str]:
    """This gokku (or one of its modules), as a command: the same interpreter and package.
    ``-P`` keeps the working directory off ``sys.path``: ``python -m`` would otherwise run
    whatever ``gokku/`` package sits in the directory the server was started from."""
    return [sys.executable, "-P", "-m", module]


def split_command(command: str) -> list[str]:
    """POSIX shell word splitting, never a shell: ``config:set K="a b"`` → 2 words."""
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise UsageError(
            f"cannot split the command ({exc}): balance your quotes, e.g. KEY='a b'"
        ) from None


def door_argv(root: str, fingerprint: str) -> list[str]:
    """A session's ``gokku`` arguments: the door, for the state served and the key that
    logged in (the exec'd worker and the zygote's child run the same)."""
    return ["ssh-command", "--root", root, "--fingerprint", fingerprint]
