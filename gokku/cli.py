"""The ``gokku`` command on the server: the CLI door into the dispatcher."""

import sys


def main(argv: list[str] | None = None) -> int:
    from gokku.context import Identity, Request
    from gokku.dispatcher import dispatch

    args = sys.argv[1:] if argv is None else argv
    return dispatch(Request(argv=list(args), identity=Identity.local()))


if __name__ == "__main__":
    raise SystemExit(main())
