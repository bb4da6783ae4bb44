#!/usr/bin/env python3
"""The tutorial's multi-connection echo server, on pytest-multiconn's selector loop.

    python multiconn-server.py <host> <port>

Prints the tutorial's lines (Listening on / Accepted connection from / Echoing / Closing
connection to); Ctrl-C prints "Caught keyboard interrupt, exiting" and exits cleanly.
"""

import os
import sys

from pytest_multiconn.cli.tutorial import printer, serve_until_interrupted


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(f"Usage: {os.path.basename(argv[0])} <host> <port>")
        return 2
    try:
        return serve_until_interrupted(argv[1], argv[2], printer())
    except (ValueError, OSError) as exc:
        print(f"{os.path.basename(argv[0])}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
