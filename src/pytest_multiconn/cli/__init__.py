"""The ``multiconn`` command: the tutorial's server and client, the demo, and more.

``main(argv=None) -> int`` runs in-process (tests call it with a list); bad input prints one
line starting with ``multiconn: error:`` and returns 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from pytest_multiconn.cli.argtypes import positive_int, positive_seconds, seed
from pytest_multiconn.cli.signals import request_stop
from pytest_multiconn.cli.tutorial import (
    STDOUT_GONE,
    printer,
    run_client,
    serve_until_interrupted,
)
from pytest_multiconn.errors import MulticonnError

#: Modules that add subcommands: each has ``add_parser(subparsers)`` which registers its
#: subcommand and sets ``func`` (a ``run(args) -> int``) as the parser default.
SUBCOMMANDS: tuple[str, ...] = (
    "pytest_multiconn.cli.proxy",
    "pytest_multiconn.cli.suite",
    "pytest_multiconn.cli.toxiproxy_server",
)

Runner = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit status 2 (never a usage dump)."""

    def error(self, message: str) -> Any:  # argparse's signature says NoReturn
        self.exit(2, f"multiconn: error: {message} (see `{self.prog} --help`)\n")


def _version() -> str:
    # From the package metadata, as pytest_multiconn.__version__ (a namespace above cli/).
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pytest-multiconn")
    except PackageNotFoundError:  # pragma: no cover - a tree that was never installed
        return "0.0.0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="multiconn",
        description="Multi-connection echo server and client, and sockets that misbehave.",
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {_version()}",
        help="print the installed version and exit",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    server = sub.add_parser("server", help="the tutorial's echo server: serve until Ctrl-C")
    server.add_argument("host", help="address to listen on, for example 127.0.0.1 or ::1")
    server.add_argument("port", help="TCP port; 0 lets the kernel pick a free one")
    server.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback host (off: test servers stay on loopback)",
    )
    server.add_argument(
        "--idle-timeout",
        type=positive_seconds,
        default=None,
        help="close a connection on which neither side made progress for this many seconds",
    )
    server.add_argument(
        "--max-connections",
        type=positive_int,
        default=None,
        help="accept at most this many connections at once; more wait in the backlog "
        "(default: no limit)",
    )
    server.add_argument(
        "--protocol",
        choices=("echo", "line", "http", "redis"),
        default="echo",
        help="what to serve: the tutorial's echo server (default), a line echo server, a "
        "small HTTP/1.1 server (h11) or a small Redis-protocol server (PING, SET, GET)",
    )
    # Set by ServerProcess (core/process.py) so that the child never outlives its parent.
    server.add_argument(
        "--parent-pipe", type=int, default=None, metavar="FD",
        help="(set by ServerProcess) stop when this inherited pipe reads EOF: the parent died",
    )
    server.add_argument(
        "--parent-death-signal", action="store_true",
        help="(set by ServerProcess) on Linux, stop on SIGTERM when the parent thread dies",
    )
    from pytest_multiconn.cli.tls_args import add_client_tls_arguments, add_server_tls_arguments

    add_server_tls_arguments(server)
    server.set_defaults(func=_run_server)

    client = sub.add_parser("client", help="the tutorial's multi-connection client")
    client.add_argument("host", help="the server's address, for example 127.0.0.1")
    client.add_argument("port", help="the server's TCP port")
    client.add_argument("num_connections", help="how many connections to open at once")
    client.add_argument(
        "--message",
        action="append",
        default=None,
        help="a message to send (repeatable; default: the tutorial's two)",
    )
    client.add_argument(
        "--timeout",
        type=positive_seconds,
        default=10.0,
        help="give up after this many seconds (default: %(default)s)",
    )
    client.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a non-loopback host (off: test traffic stays on this machine)",
    )
    from pytest_multiconn.cli.suite import add_exchange_arguments

    add_exchange_arguments(client, default=None)
    add_client_tls_arguments(client)
    client.set_defaults(func=_run_client)

    demo = sub.add_parser(
        "demo", help="the tutorial's session on an ephemeral port, then a summary"
    )
    demo.add_argument(
        "--connections",
        type=positive_int,
        default=5,
        help="connections the tutorial's client opens (default: %(default)s)",
    )
    demo.add_argument(
        "--seed",
        type=seed,
        default=None,
        help="seed for the fault-injection suite (default: a new random one, printed)",
    )
    demo.add_argument("--no-suite", action="store_true", help="only the tutorial's session")
    demo.set_defaults(func=_run_demo)

    for name in SUBCOMMANDS:
        importlib.import_module(name).add_parser(sub)
    return parser


def _run_server(args: argparse.Namespace) -> int:
    from pytest_multiconn.cli.tls_args import cli_server_tls

    if args.parent_pipe is not None:
        from pytest_multiconn.core.process import exit_with_parent

        exit_with_parent(args.parent_pipe, death_signal=args.parent_death_signal)
    # Stdout gone (`multiconn server ... | head -1`): stop, quietly, as command-line tools do.
    stop = threading.Event()
    stdout_gone = threading.Event()

    def on_gone() -> None:
        stdout_gone.set()
        request_stop(stop)

    out = printer(on_gone=on_gone)
    with cli_server_tls(args, out) as tls:
        status = serve_until_interrupted(
            args.host,
            args.port,
            out,
            stop=stop,
            allow_remote=args.allow_remote,
            idle_timeout=args.idle_timeout,
            max_connections=args.max_connections,
            tls=tls,
            protocol=args.protocol,
        )
    return STDOUT_GONE if stdout_gone.is_set() else status


def _run_client(args: argparse.Namespace) -> int:
    if args.protocol is not None:
        from pytest_multiconn.cli.suite import run_exchange_client

        return run_exchange_client(args)
    messages = [m.encode() for m in args.message] if args.message else None
    kwargs: dict[str, Any] = {"timeout": args.timeout, "allow_remote": args.allow_remote}
    if messages is not None:
        kwargs["messages"] = messages
    from pytest_multiconn.cli.tls_args import cli_client_tls

    tls = cli_client_tls(args)
    if tls is not None:
        kwargs.update(tls=tls, server_hostname=args.server_hostname)
    results = run_client(args.host, args.port, args.num_connections, out=printer(), **kwargs)
    for result in results.failed:
        print(f"multiconn: {result}", file=sys.stderr)
    return 0 if results.ok else 1


def _run_demo(args: argparse.Namespace) -> int:
    from pytest_multiconn.cli.demo import run_demo

    return run_demo(
        connections=args.connections, seed=args.seed, suite=not args.no_suite, out=printer()
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``multiconn`` command; returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    runner: Runner = args.func
    try:
        return runner(args)
    except (MulticonnError, ValueError, OSError) as exc:
        print(f"multiconn: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
