"""How a script that Gokku started calls back into it: the plugin helpers' ``_gokku`` and
the git hooks of app repositories run ``python -m gokku.callback ARGS``.

A callback is the server's own dispatcher on the state the script was started for, as
that state's owner (the local identity). It is never a client: ``GOKKU_REMOTE``,
``GOKKU_SSH`` or a git remote mean nothing here (``gokku.client`` is not even imported),
so a script's environment cannot send its commands to another host or run a command of
its choosing in place of ssh. The helpers start it with an environment emptied down to
CALLBACK_VARIABLES (bash's ``exec -c``), so that nothing a script exported, the app's
variables included (``LD_PRELOAD``, ``PYTHONPATH``, ``GIT_DIR``, ``GOKKU_TRACE``...),
reaches the interpreter or the commands it runs.
"""

import sys

from gokku.access import DECIDED_VAR
from gokku.storage import HELD_LOCKS_VAR

# What a callback is started with, all of it set by Gokku (``runner.base_env``): the
# state, the locks the calling command holds and the incarnations its access holds on,
# how long to wait for others, and what the scripts a callback runs in turn get from ours.
CALLBACK_VARIABLES = (
    "GOKKU_ROOT",
    HELD_LOCKS_VAR,
    DECIDED_VAR,
    "GOKKU_LOCK_TIMEOUT",
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TZ",
    "USER",
    "LOGNAME",
    "TERM",
)


def main(argv: list[str] | None = None) -> int:
    from gokku.cli import local_request
    from gokku.dispatcher import dispatch

    return dispatch(local_request(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    raise SystemExit(main())
