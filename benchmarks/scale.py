"""Hold 10,000 concurrent connections to one server and echo on all of them.

    python benchmarks/scale.py [-n 10000] [--servers ours,asyncio,uvloop]

The clients live in the C load generator's process, the server in its own, so each process
needs only about N descriptors.  Both raise their soft ``RLIMIT_NOFILE`` to the hard limit;
when the hard limit is too low for N this says so and stops (raise it with ``ulimit -Hn`` as
root, or in /etc/security/limits.conf).  Printed per server: accept rate (connections per
second until every connection has echoed once), server memory per connection (RSS delta / N),
the time to echo 64 bytes on all N at once, and the server's CPU while they sit idle.
"""

from __future__ import annotations

import argparse
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import available_servers, build_loadgen, fmt
from echo import Config, measure_idle

#: Descriptors each process needs beyond one per connection (listener, pipes, epoll, stdio).
SPARE_FDS = 64


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="connections (default 10000)")
    parser.add_argument("--servers", default="ours")
    args = parser.parse_args(argv)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.n + SPARE_FDS
    if hard != resource.RLIM_INFINITY and hard < need:
        print(f"cannot hold {args.n} connections: the hard descriptor limit is {hard} and each "
              f"process needs about {need}. Raise the hard limit (ulimit -Hn {need} as root, "
              "or /etc/security/limits.conf) and run again.")
        return 2
    print(f"descriptor limit: soft {soft}, hard {hard}; each process raises its soft limit to "
          f"{hard} for {args.n} connections")
    exe = build_loadgen()
    servers, notes = available_servers(args.servers.split(","))
    for note in notes:
        print(f"note: {note}")
    failed = False
    for kind in servers:
        run = measure_idle(exe, kind, Config(quick=False), args.n, 1.0, timeout=120.0)
        ok = run["complete"] and run["echoed_all"] == args.n and not run["errors"]
        failed |= not ok
        print(f"{kind:9} {run['connected']}/{args.n} connected at "
              f"{fmt(run['accept_rate'])} conn/s; "
              f"{fmt(run['bytes_per_conn'])} B of server memory per connection; echo on all "
              f"{run['echoed_all']} in {run['echo_all_wall'] * 1e3:.0f} ms; idle CPU "
              f"{run['idle_cpu']:.1%}{'' if ok else '  FAILED'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
