"""The ``gokku`` command on the server: the CLI door into the dispatcher."""

import os
import sys


def main(argv: list[str] | None = None) -> int:
    from gokku.context import Identity, Request
    from gokku.dispatcher import dispatch

    args = sys.argv[1:] if argv is None else argv
    # A caller at a terminal has, in SSH terms, been granted a pty: scripts get its TERM
    # (psql and redis-cli need it to drive the terminal).
    term = os.environ.get("TERM") if any(os.isatty(fd) for fd in (0, 1, 2)) else None
    return dispatch(Request(argv=list(args), identity=Identity.local(), term=term))


if __name__ == "__main__":
    raise SystemExit(main())
