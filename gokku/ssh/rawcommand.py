"""A command string that is not UTF-8, taken by the embedded server as sshd takes it.

An SSH exec request carries bytes. sshd hands them to the forced command as they came
(``SSH_ORIGINAL_COMMAND``), which Python reads with surrogateescape; asyncssh refuses a
request that is not UTF-8 before any session starts. The embedded door would then
neither run nor audit a command the OpenSSH door runs and audits. ``install`` makes
asyncssh's server channel decode the command the way Python decodes sshd's variable, so
both doors run, and log, the same argv.

A patch on asyncssh's class, so ``install`` is called by the serving process only; an
asyncssh whose exec handling is shaped otherwise is left alone, with a log line (it then
refuses such a command, as before).
"""

import inspect
import logging
from typing import Any

log = logging.getLogger("gokku.serve")

# What the replacement calls: asyncssh 2.24's, which starts the session it was asked for.
EXPECTED = {
    "_process_exec_request": ["self", "packet"],
    "_start_session": ["self", "command", "subsystem"],
}


def install() -> bool:
    """Patch asyncssh in this process (idempotent); True when patched."""
    from asyncssh.channel import SSHServerChannel

    if getattr(SSHServerChannel, "_gokku_raw_command", False):
        return True
    for name, parameters in EXPECTED.items():
        method = getattr(SSHServerChannel, name, None)
        if not callable(method) or list(inspect.signature(method).parameters) != parameters:
            log.warning("exec requests not patched: SSHServerChannel.%s changed", name)
            return False

    def process_exec_request(self: Any, packet: Any) -> bool:
        command = packet.get_string().decode("utf-8", "surrogateescape")
        packet.check_end()
        return self._start_session(command=command)

    SSHServerChannel._process_exec_request = process_exec_request
    SSHServerChannel._gokku_raw_command = True
    return True
