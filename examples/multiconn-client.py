#!/usr/bin/env python3
"""The tutorial's multi-connection client, on pytest-multiconn's MultiConnClient.

    python multiconn-client.py <host> <port> <num_connections>

Each connection sends the tutorial's two messages and reads until it has them back, printing
the tutorial's lines (Starting connection / Sending / Received / Closing connection).
"""

import os
import sys

from pytest_multiconn.cli.tutorial import printer, run_client


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(f"Usage: {os.path.basename(argv[0])} <host> <port> <num_connections>")
        return 2
    try:
        results = run_client(argv[1], argv[2], argv[3], out=printer())
    except (ValueError, OSError) as exc:
        print(f"{os.path.basename(argv[0])}: error: {exc}", file=sys.stderr)
        return 2
    for result in results.failed:
        print(f"{os.path.basename(argv[0])}: {result}", file=sys.stderr)
    return 0 if results.ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
