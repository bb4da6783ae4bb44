"""``make demo`` / ``multiconn demo``: the tutorial's session on an ephemeral port, a summary,
then the fault-injection suite against the same server."""

from __future__ import annotations

import os
import time

from pytest_multiconn.cli.tutorial import Printer, client_observer, peer_text, server_observer
from pytest_multiconn.client.multiconn import MultiConnClient
from pytest_multiconn.servers.echo import EchoServer
from pytest_multiconn.suite.checks import run_suite


def run_demo(
    *, connections: int = 5, seed: int | None = None, suite: bool = True, out: Printer = print
) -> int:
    """Run the demo; returns 0 when every connection echoed byte for byte."""
    if connections < 1:
        raise ValueError(f"--connections must be at least 1, got {connections}")
    out("== The tutorial's session: echo server on an ephemeral loopback port ==")
    started = time.perf_counter()
    with EchoServer(on_event=server_observer(out)) as server:
        out(f"Listening on {peer_text(server.address)}")
        client = MultiConnClient(
            server.address, connections, on_event=client_observer(out, server.address)
        )
        results = client.run()
        stats = server.wait_for_closed(connections)
    elapsed = time.perf_counter() - started
    out("")
    out("== Summary ==")
    for result in results:
        out(f"  {result}")
    out(
        f"  server: accepted {stats.accepted}, echoed {stats.bytes_out} of {stats.bytes_in} bytes, "
        f"peak buffered {stats.peak_buffered} B; whole session {elapsed * 1e3:.1f} ms"
    )
    ok = results.ok and stats.bytes_in == stats.bytes_out
    echoed = f"{sum(r.ok for r in results)}/{len(results)} connections echoed exactly"
    out(f"  {'OK' if ok else 'FAILED'}: {echoed}")
    if not suite:
        return 0 if ok else 1
    out("")
    out("== The fault-injection suite against a fresh EchoServer ==")
    with EchoServer() as server:
        suite_ok = run_suite(server.address, seed=seed, out=out, pid=os.getpid())
    return 0 if ok and suite_ok else 1
