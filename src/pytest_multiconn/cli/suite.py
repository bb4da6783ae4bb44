"""``multiconn suite HOST PORT [--protocol ...]``: the fault-injection suite against any
request/response server; and ``multiconn client ... --protocol`` (exchanges from a shell)."""

from __future__ import annotations

import argparse
import random
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pytest_multiconn.core.address import check_host, parse_port
from pytest_multiconn.core.escapes import unescape
from pytest_multiconn.exchanges import PROTOCOLS, Exchange, by_name
from pytest_multiconn.suite.checks import CHECK_NAMES, run_suite


def add_exchange_arguments(parser: argparse.ArgumentParser, default: str | None = "echo"
                           ) -> None:
    parser.add_argument("--protocol", choices=PROTOCOLS, default=default,
                        help="what the server speaks (default: %(default)s)")
    parser.add_argument("--send", default=None,
                        help="the request: bytes for exact/echo/length, a line for line, a "
                        "path for http, a command for redis (\\r \\n \\t \\xNN escapes work)")
    parser.add_argument("--expect", default=None,
                        help="the exact reply (exact, line, redis), with the same escapes")


def _unescape(text: str | None) -> bytes | None:
    return None if text is None else unescape(text)


def exchange_from_args(args: argparse.Namespace) -> Exchange:
    return by_name(args.protocol or "echo", send=_unescape(args.send),
                   expect=_unescape(args.expect))


def add_parser(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "suite",
        help="run the fault-injection suite against a server and print a table "
        "(exit status 0 only if every check passed)",
    )
    parser.add_argument("host", help="the server's address, for example 127.0.0.1 or ::1")
    parser.add_argument("port", help="the server's TCP port")
    add_exchange_arguments(parser)
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


def _replay(args: argparse.Namespace) -> str:
    words = ["multiconn", "suite", args.host, str(args.port), "--protocol", args.protocol]
    for flag in ("send", "expect"):
        value = getattr(args, flag)
        if value is not None:
            words += [f"--{flag}", value]
    for name in args.only or ():
        words += ["--only", name]
    return " ".join(shlex.quote(w) for w in words) + " --seed {seed}"


def run(args: argparse.Namespace) -> int:
    host = check_host(args.host, allow_remote=args.allow_remote, role="connect to")
    address = (host, parse_port(args.port))
    exchange = exchange_from_args(args)
    from pytest_multiconn.cli.tls_args import cli_client_tls

    tls = cli_client_tls(args)
    ok = run_suite(address, args.seed, print, exchange=exchange, replay=_replay(args),
                   pid=args.pid, only=args.only, tls=tls)
    return 0 if ok else 1


def run_exchange_client(args: argparse.Namespace) -> int:
    """``multiconn client HOST PORT N --protocol P``: N connections at once, each sending the
    exchange's request (and ``--message`` count of them, default 1) and judging the reply."""
    from pytest_multiconn.cli.tls_args import cli_client_tls
    from pytest_multiconn.suite.peers import talk

    host = check_host(args.host, allow_remote=args.allow_remote, role="connect to")
    address = (host, parse_port(args.port))
    try:
        n = int(args.num_connections)
    except ValueError:
        raise ValueError(f"num_connections must be a positive integer, got "
                         f"{args.num_connections!r}") from None
    if n < 1:
        raise ValueError(f"num_connections must be a positive integer, got {n}")
    exchange = exchange_from_args(args)
    tls = cli_client_tls(args)
    context = None
    if tls is not None:
        from pytest_multiconn.tls.config import client_tls

        context = client_tls(tls, address).context
    deadline = time.monotonic() + args.timeout

    def one(i: int) -> tuple[int, Any]:
        requests = exchange.requests(1, random.Random(i))
        return i, talk(address, context, exchange, requests, deadline)

    with ThreadPoolExecutor(max_workers=min(n, 32)) as pool:
        results = list(pool.map(one, range(1, n + 1)))
    bad = 0
    for i, result in results:
        problem = result.problem
        if problem is None:
            outcome = result.reader.outcomes[0]
            print(f"connection {i}: {exchange.name} reply ok ({len(outcome.reply)} B)")
        else:
            bad += 1
            print(f"connection {i}: FAILED: {problem}")
    print(f"{n - bad} of {n} connections got a right reply")
    return 0 if not bad else 1
