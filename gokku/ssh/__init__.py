"""The SSH doors: the embedded asyncssh server (``gokku serve``) and the OpenSSH
forced-command door (``gokku ssh-command``). Both end in ``ssh-command``, which turns the
command string into argv, the key into an identity, and calls the dispatcher.

Nothing here imports asyncssh; ``gokku.ssh.server`` does, and only ``serve`` loads it.
"""

import shlex

from gokku.errors import UsageError


def split_command(command: str) -> list[str]:
    """POSIX shell word splitting, never a shell: ``config:set K="a b"`` → 2 words."""
    try:
        return shlex.split(command)
    except ValueError as exc:
        raise UsageError(
            f"cannot split the command ({exc}): balance your quotes, e.g. KEY='a b'"
        ) from None
