"""Descriptor limits: the server takes all it may, its sessions get back what it had.

Every connection takes a socket and every session four descriptors more (its pipe ends
or pty, a pidfd in the worker and one in the zygote): the 1024 a login shell starts with
are about 200 sessions. So ``serve`` raises its soft limit to the hard limit. A session,
and the plugin script it runs, is not the server: it starts with the soft limit the
server was started with, as a command sshd runs would, and a script that leaks or
``select()``s descriptors meets the limit it was written for.
"""

import logging
import resource

log = logging.getLogger("gokku.serve")


def raise_to_hard() -> int:
    """Take the hard limit; return the soft limit sessions should get back."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("file descriptors: raised the limit from %d to %d", soft, hard)
    return soft


def restore(soft: int) -> None:
    """In a session's process, before it runs anything: the soft limit back to ``soft``."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, hard), hard))
