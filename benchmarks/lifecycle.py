"""Start and stop costs of :class:`EchoServer`, measured in this process.

    python benchmarks/lifecycle.py [--quick] [--json FILE]

* ``start()`` + ``stop()`` of an idle server (median of many);
* ``stop()`` with 100 idle clients connected (each repetition opens 100 connections, waits
  until the server has accepted them all, then times ``stop()`` alone).
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from pytest_multiconn import EchoServer


def start_stop(reps: int) -> list[float]:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        server = EchoServer().start()
        server.stop()
        times.append(time.perf_counter() - t0)
        server.check()
    return times


def stop_with_clients(reps: int, clients: int = 100) -> list[float]:
    times = []
    for _ in range(reps):
        server = EchoServer().start()
        socks: list[socket.socket] = []
        try:
            for _ in range(clients):
                socks.append(socket.create_connection(server.address, timeout=10))
            server.wait_for_connections(clients, timeout=10)
            t0 = time.perf_counter()
            server.stop()
            times.append(time.perf_counter() - t0)
            server.check()
        finally:
            server.stop()
            for s in socks:
                s.close()
    return times


def run(quick: bool, log: Any = print) -> dict[str, Any]:
    ss = start_stop(100 if quick else 500)
    sc = stop_with_clients(10 if quick else 30)
    res = {
        "start_stop_ms": {"median": statistics.median(ss) * 1e3, "min": min(ss) * 1e3,
                          "max": max(ss) * 1e3, "n": len(ss)},
        "stop_100_clients_ms": {"median": statistics.median(sc) * 1e3, "min": min(sc) * 1e3,
                                "max": max(sc) * 1e3, "n": len(sc)},
    }
    log(f"  lifecycle start+stop: median {res['start_stop_ms']['median']:.3f} ms; "
        f"stop() with 100 clients: median {res['stop_100_clients_ms']['median']:.3f} ms")
    return res


def print_report(res: dict[str, Any]) -> None:
    print("\nserver life cycle (in-process, ms)")
    for key, title in (("start_stop_ms", "start() + stop(), idle"),
                       ("stop_100_clients_ms", "stop() with 100 idle clients")):
        s = res[key]
        print(f"  {title:30} min {s['min']:7.3f}  median {s['median']:7.3f}  max {s['max']:7.3f}"
              f"  (n={s['n']})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    res = run(args.quick)
    print_report(res)
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
