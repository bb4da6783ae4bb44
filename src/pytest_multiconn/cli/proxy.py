r"""``multiconn proxy``: the fault-injecting proxy for clients that are not Python.

    multiconn proxy 127.0.0.1 0 127.0.0.1 8080 --fault latency:ms=50,jitter=5

prints ``proxy listening on 127.0.0.1:PORT -> 127.0.0.1:8080`` and relays until Ctrl-C (or
``--duration`` seconds).  ``--fault`` (repeatable) is ``KIND[:key=value,...]``: KIND is a
toxiproxy type name (latency, bandwidth, slicer, limit_data, timeout, reset_peer,
slow_close), keys are the fault's parameters plus ``direction`` (upstream = client to server,
downstream = server to client, both; default downstream), ``probability`` and ``name``.
The toxics of our own (corrupt, substitute, coalesce, truncate) work too.  Values are
read by the parameter's type: numbers and true/false as usual, bytes (``substitute``'s
``pattern`` and ``replacement``) with ``\r \n \t \xNN`` escapes, a list of integers
(``corrupt``'s ``offsets``) separated by ``;``; ``\,`` is a comma inside a value:

    multiconn proxy 127.0.0.1 0 127.0.0.1 8080 --fault 'substitute:pattern=OK,replacement=KO'
    multiconn proxy 127.0.0.1 0 127.0.0.1 8080 --fault 'corrupt:offsets=0;17'
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import threading
from collections.abc import Sequence
from typing import Any

from pytest_multiconn.cli.signals import stop_on_signals, wait_for_stop
from pytest_multiconn.core.address import parse_port
from pytest_multiconn.core.escapes import unescape
from pytest_multiconn.errors import FaultParameterError, MulticonnError
from pytest_multiconn.faults.toxics import TOXICS, Toxic
from pytest_multiconn.proxy.proxy import FaultProxy

_ADD_KEYS = ("direction", "probability", "name")


def _value(text: str) -> Any:
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def _field_types(kind: str) -> dict[str, str]:
    """The declared type of each parameter of toxic ``kind`` (its dataclass annotation, a
    string under ``from __future__ import annotations``); empty for an unknown kind, which
    ``TOXICS.create`` then reports."""
    cls = TOXICS.get(kind)
    if cls is None:
        return {}
    return {f.name: str(f.type) for f in dataclasses.fields(cls)}


def _typed_value(raw: str, declared: str | None) -> Any:
    """``raw`` read as the parameter's declared type; the toxic validates the result."""
    if declared is not None and declared.startswith("bytes"):
        return unescape(raw)
    if declared is not None and declared.startswith("tuple[int"):
        return tuple(_value(part.strip()) for part in raw.split(";") if part.strip())
    return _value(raw)


def parse_fault(spec: str) -> tuple[Toxic, dict[str, Any]]:
    """``"latency:ms=50,direction=both"`` -> ``(Latency(ms=50), {"direction": "both"})``.

    Bad names, keys and values raise ``ValueError`` (a :class:`FaultParameterError`) with a
    one-line message that quotes the ``--fault`` argument.
    """
    kind, _, rest = spec.strip().partition(":")
    params: dict[str, Any] = {}
    add: dict[str, Any] = {}
    types = _field_types(kind)
    # Split on commas that are not escaped: "\\," is a comma inside a value.
    items = (p.replace("\\,", ",").strip() for p in re.split(r"(?<!\\),", rest))
    for item in filter(None, items):
        key, eq, raw = item.partition("=")
        if not eq:
            raise ValueError(f"expected key=value in --fault {spec!r}, got {item!r}")
        key = key.strip()
        try:
            value = _value(raw.strip()) if key in _ADD_KEYS else _typed_value(
                raw.strip(), types.get(key))
        except ValueError as exc:
            raise FaultParameterError(f"{key}: {exc} (in --fault {spec!r})") from None
        (add if key in _ADD_KEYS else params)[key] = value
    try:
        toxic = TOXICS.create(kind, **params)
    except FaultParameterError as exc:
        raise FaultParameterError(
            f"{exc} (in --fault {spec!r}; every fault also takes {', '.join(_ADD_KEYS)})"
        ) from None
    if "name" in add and add["name"] is not None:
        add["name"] = str(add["name"])
    return toxic, add


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "proxy",
        help="a TCP proxy that injects faults (toxiproxy's set) in front of a server",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("listen_host", help="address the proxy listens on, e.g. 127.0.0.1")
    parser.add_argument("listen_port", help="0 lets the kernel pick a free port")
    parser.add_argument("target_host", help="address of the server behind the proxy")
    parser.add_argument("target_port", help="TCP port of the server behind the proxy")
    parser.add_argument("--fault", action="append", default=[], metavar="KIND[:k=v,...]",
                        help="add a fault, e.g. latency:ms=50,jitter=5,direction=downstream")
    parser.add_argument("--seed", type=int, default=None,
                        help="seed for every random draw (default: the run seed)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: run until Ctrl-C or SIGTERM)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow non-loopback addresses (off: test traffic stays local)")
    parser.set_defaults(func=run)
    return parser


def _check_duration(value: float | None) -> float | None:
    # argparse's type=float takes "nan", "inf" and negatives; Event.wait() would then return
    # at once (nan, negative) or raise OverflowError (inf): refuse them here, in one line.
    if value is not None and not 0 < value <= threading.TIMEOUT_MAX:
        raise ValueError(f"--duration must be a positive, finite number of seconds, "
                         f"got {value!r}")
    return value


def run(args: argparse.Namespace) -> int:
    duration = _check_duration(args.duration)
    faults = [parse_fault(spec) for spec in args.fault]
    target = (args.target_host, parse_port(args.target_port, what="target port"))
    listen = (args.listen_host, parse_port(args.listen_port, what="listen port"))
    proxy = FaultProxy(target, listen, seed=args.seed, allow_remote=args.allow_remote)
    for toxic, add in faults:
        proxy.add(toxic, **add)
    stop = threading.Event()
    # The handlers go in before the ready line: a signal sent as soon as it is read must
    # stop us, not find SIGINT still ignored or SIGTERM still fatal.
    with stop_on_signals(stop), proxy:
        try:
            host, port = proxy.address[0], proxy.address[1]  # TCP: --listen-host/-port
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            print(f"proxy listening on {where} -> {target[0]}:{target[1]} "
                  f"(seed {proxy.seed})", flush=True)
            for info in proxy.faults():
                print(f"  fault {info.name}: {info.fault!r} {info.direction} "
                      f"p={info.probability:g}", flush=True)
            # Ctrl-C, SIGTERM or --duration, whichever comes first (cli/signals.py: why
            # not a plain Event.wait).
            wait_for_stop(stop, duration)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr, flush=True)
        stats = proxy.stats()
    print(f"proxied {stats.accepted} connections, {stats.bytes_in} B up, "
          f"{stats.bytes_out} B down", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m pytest_multiconn.cli.proxy ...`` (same as ``multiconn proxy ...``)."""
    parser = argparse.ArgumentParser(prog="multiconn")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["proxy", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except (MulticonnError, ValueError, OSError) as exc:
        print(f"multiconn: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover - exercised through a subprocess
    raise SystemExit(main())
