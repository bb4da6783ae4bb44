"""``multiconn toxiproxy-server``: toxiproxy's HTTP API without the Go daemon.

    multiconn toxiproxy-server --host 127.0.0.1 --port 8474 [--config FILE] [--seed N]

prints ``toxiproxy API on http://127.0.0.1:8474 (seed N)`` and serves until Ctrl-C; point
any toxiproxy client at it.  ``--config`` is toxiproxy's populate file (a JSON array of
proxies).  ``--seed`` seeds every random draw of every proxy (toxicity, jitter, slicer
sizes), so a run replays; without it a fresh seed is printed.  Proxies and the API stay on
loopback unless ``--allow-remote``.
"""

from __future__ import annotations

import argparse
import sys
import threading
from typing import Any

from pytest_multiconn.cli.argtypes import seed
from pytest_multiconn.cli.signals import stop_on_signals, wait_for_stop
from pytest_multiconn.core.address import parse_port
from pytest_multiconn.errors import MissingExtraError


def _port(text: str) -> int:
    try:
        return parse_port(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "toxiproxy-server",
        help="toxiproxy's HTTP API over our fault proxy: a drop-in for the toxiproxy daemon",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address of the HTTP API (default 127.0.0.1)")
    parser.add_argument("--port", type=_port, default=8474,
                        help="port of the HTTP API (default 8474, toxiproxy's; 0 = ephemeral)")
    parser.add_argument("--config", default=None, metavar="FILE",
                        help="create these proxies at start (toxiproxy's JSON populate format)")
    parser.add_argument("--seed", type=seed, default=None,
                        help="seed for every random draw of every proxy (default: a new one)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow non-loopback addresses (off: test traffic stays local)")
    parser.add_argument("--quiet", action="store_true", help="do not print each request")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    try:
        from pytest_multiconn.toxiproxy.http import ToxiproxyServer
    except MissingExtraError as exc:
        print(f"multiconn: error: {exc}", file=sys.stderr)
        return 2

    def log(method: str, target: str, status: int) -> None:
        print(f"{method} {target} {status}", flush=True)

    server = ToxiproxyServer(
        args.host, args.port, seed=args.seed, config=args.config,
        allow_remote=args.allow_remote, on_request=None if args.quiet else log,
    )
    stop = threading.Event()
    # The handlers go in before the ready line: a signal sent as soon as it is read must
    # stop us, not find SIGINT still ignored or SIGTERM still fatal.
    with stop_on_signals(stop), server:
        try:
            print(f"toxiproxy API on {server.url} (seed {server.seed})", flush=True)
            for name, proxy in server.api.proxies().items():
                print(f"  proxy {name}: {proxy['listen']} -> {proxy['upstream']}"
                      f"{'' if proxy['enabled'] else ' (disabled)'}", flush=True)
            # Until Ctrl-C or SIGTERM (cli/signals.py: why not a plain Event.wait).
            wait_for_stop(stop)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr, flush=True)
    return 0
