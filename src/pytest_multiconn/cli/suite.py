"""``multiconn suite HOST PORT [--protocol ...]``: the fault-injection suite against any
request/response server; and ``multiconn client ... --protocol`` (exchanges from a shell)."""

from __future__ import annotations

import argparse
import os
import random
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pytest_multiconn.cli.argtypes import positive_int, positive_number, seed
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
    what = parser.add_argument_group("what the protocol needs")
    what.add_argument("--expect-status", type=int, default=None, metavar="CODE",
                      help="http: the status every reply must have (default 200)")
    what.add_argument("--expect-body", default=None, metavar="TEXT",
                      help="http: the exact body every reply must have (escapes work)")
    what.add_argument("--setup", action="append", default=None, metavar="REQUEST",
                      help="a request sent once before the rows, on its own connection (for "
                      "example memcached's 'set k 0 0 5\\r\\nhello\\r\\n'); repeatable")
    what.add_argument("--terminator", default=None, metavar="TEXT",
                      help="line: a reply spans lines up to and including this (memcached's "
                      "'END\\r\\n'); --expect is then the whole reply")
    what.add_argument("--delimiter", default=None, metavar="TEXT",
                      help="line: the line delimiter (default \\n; memcached: \\r\\n)")
    what.add_argument("--answers-garbage", default=None, metavar="LIST",
                      help="what the server may answer to garbage, comma-separated, from "
                      "close, error, nothing, echo (line, exact, length)")
    what.add_argument("--error-prefix", default=None, metavar="TEXT",
                      help="the bytes an error reply starts with (with --answers-garbage error)")
    rows = parser.add_argument_group("which rows, and their limits")
    rows.add_argument("--only", action="append", choices=CHECK_NAMES, default=None,
                      help="run only this row (repeatable)")
    rows.add_argument("--skip", action="append", choices=CHECK_NAMES, default=None,
                      help="leave this row out (repeatable)")
    rows.add_argument("--max-growth-mib", type=positive_number, default=None, metavar="MIB",
                      help="memory growth under never-readers that counts as buffering without "
                      "bound (default 32)")
    rows.add_argument("--max-idle-cpu", type=positive_number, default=None, metavar="SHARE",
                      help="share of one CPU an idle server may use (default 0.25)")
    rows.add_argument("--max-probe-latency", type=positive_number, default=None,
                      metavar="SECONDS", help="worst reply another client may see while one "
                      "misbehaves (default 1.0)")
    rows.add_argument("--burst", type=positive_int, default=None, metavar="N",
                      help="connections the burst row opens at once (default 128; lower it for "
                      "a server with a documented connection limit)")
    rows.add_argument("--timeout", type=positive_number, default=None, metavar="SECONDS",
                      help="bound on each row's client work (default 10)")
    parser.add_argument("--seed", type=seed, default=None,
                        help="seed for every random choice (printed; give it again to replay)")
    parser.add_argument("--pid", type=positive_int, default=None,
                        help="the server's process id, for its memory and CPU (default: found "
                        "from the listening port on Linux, with its children)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback host (off: the suite floods its target)")
    out = parser.add_argument_group("reports")
    out.add_argument("--json", default=None, metavar="FILE",
                     help="write every row, its measurements and transcript as JSON")
    out.add_argument("--junit-xml", default=None, metavar="FILE",
                     help="write one JUnit testcase per row (for CI pages)")
    out.add_argument("--html", default=None, metavar="FILE",
                     help="write one self-contained HTML page (each row opens to its transcript, "
                     "measurements and a plot of the server's memory and CPU)")
    from pytest_multiconn.cli.tls_args import add_client_tls_arguments

    add_client_tls_arguments(parser)
    parser.set_defaults(func=run)


#: Flags replayed as given (name, takes a value).
_REPLAYED = (
    ("protocol", True), ("send", True), ("expect", True), ("expect_status", True),
    ("expect_body", True), ("terminator", True), ("delimiter", True), ("answers_garbage", True),
    ("error_prefix", True), ("max_growth_mib", True), ("max_idle_cpu", True),
    ("max_probe_latency", True), ("burst", True), ("timeout", True), ("pid", True),
    ("allow_remote", False), ("tls", False), ("cafile", True), ("server_hostname", True),
)


def _replay(args: argparse.Namespace) -> str:
    """The command line that replays this run: every flag that shapes it, and the seed."""
    words = ["multiconn", "suite", args.host, str(args.port)]
    for name, takes_value in _REPLAYED:
        value = getattr(args, name, None)
        if value is None or value is False:
            continue
        flag = "--" + name.replace("_", "-")
        words += [flag, str(value)] if takes_value else [flag]
    for name, values in (("setup", args.setup), ("only", args.only), ("skip", args.skip)):
        for value in values or ():
            words += [f"--{name}", value]
    return " ".join(shlex.quote(w) for w in words) + " --seed {seed}"


def _refuse_misplaced(args: argparse.Namespace, protocol: str) -> None:
    """A flag given for a protocol it does not apply to is a usage error, never ignored."""
    http_only = [f for f in ("expect_status", "expect_body") if getattr(args, f) is not None]
    if http_only and protocol != "http":
        raise ValueError(f"--{http_only[0].replace('_', '-')} is for --protocol http, not "
                         f"{protocol}")
    line_only = [f for f in ("terminator", "delimiter") if getattr(args, f) is not None]
    if line_only and protocol != "line":
        raise ValueError(f"--{line_only[0]} is for --protocol line, not {protocol}")
    garbage = [f for f in ("answers_garbage", "error_prefix") if getattr(args, f) is not None]
    if garbage and protocol not in ("line", "exact", "length"):
        raise ValueError(f"--{garbage[0].replace('_', '-')} is for --protocol line, exact or "
                         f"length (the {protocol} exchange knows what its servers answer)")
    if protocol == "http" and args.expect is not None:
        raise ValueError("--expect does not apply to --protocol http: use --expect-status "
                         "and --expect-body")


def _exchange(args: argparse.Namespace) -> Exchange:
    """The exchange the flags describe; a flag that does not apply is a usage error."""
    protocol = args.protocol or "echo"
    _refuse_misplaced(args, protocol)
    line_only = [f for f in ("terminator", "delimiter") if getattr(args, f) is not None]
    if protocol == "http":
        from pytest_multiconn.exchanges import HTTP

        kwargs: dict[str, Any] = {}
        if args.send is not None:
            kwargs["target"] = args.send
        if args.expect_status is not None:
            kwargs["status"] = args.expect_status
        if args.expect_body is not None:
            kwargs["expect_body"] = unescape(args.expect_body)
        return HTTP(**kwargs)
    extra: dict[str, Any] = {}
    if args.answers_garbage is not None:
        extra["answers_garbage"] = frozenset(
            a.strip() for a in args.answers_garbage.split(",") if a.strip())
    if args.error_prefix is not None:
        extra["error_prefix"] = unescape(args.error_prefix)
    if protocol == "line" and (line_only or extra):
        from pytest_multiconn.exchanges import Lines

        if args.terminator is not None and args.expect is None:
            raise ValueError("--terminator needs --expect (the whole reply, terminator "
                             "included)")
        kwargs = dict(extra)
        for name in ("send", "expect", "terminator", "delimiter"):
            value = getattr(args, name)
            if value is not None:
                kwargs[name] = unescape(value)
        return Lines(**kwargs)
    exchange = exchange_from_args(args)
    if extra:
        import dataclasses

        exchange = dataclasses.replace(exchange, **extra)  # type: ignore[type-var]
    return exchange


def _limits(args: argparse.Namespace) -> Any:
    from pytest_multiconn.suite.context import SuiteLimits

    kwargs: dict[str, Any] = {}
    if args.max_growth_mib is not None:
        kwargs["max_growth"] = int(args.max_growth_mib * 2**20)
    for name in ("max_idle_cpu", "max_probe_latency", "burst", "timeout"):
        value = getattr(args, name)
        if value is not None:
            kwargs[name] = value
    return SuiteLimits(**kwargs)


def run(args: argparse.Namespace) -> int:
    host = check_host(args.host, allow_remote=args.allow_remote, role="connect to")
    address = (host, parse_port(args.port))
    exchange = _exchange(args)
    both = set(args.only or ()) & set(args.skip or ())
    if both:
        raise ValueError(f"--only and --skip both name {sorted(both)[0]}")
    if args.pid is not None and not os.path.exists(f"/proc/{args.pid}") and os.path.isdir(
            "/proc"):
        raise ValueError(f"--pid {args.pid}: no such process")
    limits = _limits(args)
    setup = [unescape(s) for s in args.setup or ()]
    from pytest_multiconn.cli.tls_args import cli_client_tls

    tls = cli_client_tls(args)
    report = run_suite(address, args.seed, print, exchange=exchange, replay=_replay(args),
                       pid=args.pid, only=args.only, skip=args.skip, tls=tls, limits=limits,
                       setup=setup or None, reports=_report_paths(args))
    return 0 if report else 1


def _report_paths(args: argparse.Namespace) -> dict[str, str]:
    return {kind: path for kind, path in (("json", args.json), ("junit_xml", args.junit_xml),
                                          ("html", args.html)) if path}


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
