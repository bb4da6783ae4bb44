"""``multiconn suite HOST PORT``: run the fault-injection suite against any echo server."""

from __future__ import annotations

import argparse
from typing import Any

from pytest_multiconn.core.address import check_host, parse_port
from pytest_multiconn.suite.checks import CHECK_NAMES, run_suite


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "suite",
        help="run every client fault against an echo server and print a table "
        "(exit status 0 only if every check passed)",
    )
    parser.add_argument("host")
    parser.add_argument("port")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for every random choice (printed; give it again to replay)")
    parser.add_argument("--only", action="append", choices=CHECK_NAMES, default=None,
                        help="run only this check (repeatable)")
    parser.add_argument("--pid", type=int, default=None,
                        help="the server's process id for the idle-CPU check (default: found "
                        "from the listening port on Linux)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback host (off: the suite floods its target)")
    from pytest_multiconn.cli.tls_args import add_client_tls_arguments

    add_client_tls_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    host = check_host(args.host, allow_remote=args.allow_remote, role="connect to")
    address = (host, parse_port(args.port))
    from pytest_multiconn.cli.tls_args import cli_client_tls

    tls = cli_client_tls(args)
    ok = run_suite(address, args.seed, print, pid=args.pid, only=args.only, tls=tls)
    return 0 if ok else 1
