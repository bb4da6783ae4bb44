"""The suite's latency probe does not blame the server for the time the probing process was
not scheduled (its hiccup meter), and still blames a server that makes it wait."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from pytest_multiconn import EchoServer
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.wait import wait_until
from pytest_multiconn.exchanges import Echo
from pytest_multiconn.faults import Latency
from pytest_multiconn.suite.probes import ExchangeProbe

# The probe in a child process: prints "ready", runs until stdin closes, prints its verdict.
CHILD = """
import json, sys
from pytest_multiconn.exchanges import Echo
from pytest_multiconn.suite.probes import ExchangeProbe
with ExchangeProbe((sys.argv[1], int(sys.argv[2])), Echo(), timeout=10) as probe:
    print("ready", flush=True)
    sys.stdin.read()
print(json.dumps({"worst": probe.worst, "not_stalled": probe.worst_not_stalled(),
                  "trips": len(probe.trips), "error": probe.error}), flush=True)
"""
STOP_FOR = 0.5


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"),
                    reason="stops the probing process with SIGSTOP, sees it in /proc")
def test_a_stall_of_the_probing_process_is_not_blamed_on_the_server() -> None:
    stopped = threading.Event()
    child: list[subprocess.Popen[str]] = []
    requests = 0

    def on_event(event: str, conn: Connection, data: bytes | None) -> None:
        # On the 5th request, before its echo is sent: the probe's trip is in flight while
        # the probing process is stopped, so that trip is slow by STOP_FOR at least.
        nonlocal requests
        if event == "data":
            requests += 1
            if requests == 5:
                os.kill(child[0].pid, signal.SIGSTOP)
                # SIGSTOP takes effect a little later (0.5 ms here): hold the echo back until
                # the child is really stopped, or it may still read the echo in between.
                wait_until(lambda: _state(child[0].pid) == "T", 5, "the probe to be stopped",
                           describe=lambda: f"state {_state(child[0].pid)}")
                stopped.set()

    with EchoServer(on_event=on_event) as server:
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, server.host, str(server.port)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        child.append(proc)
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            assert stopped.wait(10), "the probe sent no 5th request"
            threading.Event().wait(STOP_FOR)  # the stall being forced, not a synchronisation
            os.kill(proc.pid, signal.SIGCONT)
            count = requests
            wait_until(lambda: requests >= count + 3, 10, "3 more probe trips after SIGCONT")
            out, _ = proc.communicate("", timeout=20)
        finally:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
                proc.wait(10)
    verdict = json.loads(out)
    assert verdict["error"] is None
    assert verdict["worst"] >= STOP_FOR, verdict
    assert verdict["not_stalled"] < STOP_FOR / 2, verdict


def test_a_server_that_makes_the_probe_wait_is_still_blamed() -> None:
    with EchoServer(faults=[Latency(ms=400)]) as server, \
            ExchangeProbe(server.address, Echo(), timeout=5) as probe:
        n = len(probe.trips)
        wait_until(lambda: len(probe.trips) >= n + 2 or probe.error, 10, "2 probe trips")
    assert probe.error is None
    assert probe.worst >= 0.4
    assert probe.worst_not_stalled() >= 0.4 - 0.05, (probe.worst, probe.stalls)
