"""The suite's verdicts on a server starved of CPU: the idle row does not call an idle server
a spinner (the loaded case its 2% floor, ``rows.idle.SPINNER_MIN_SHARE``, is for), and the
never-read row gives no verdict (a note) instead of calling an unbounded server bounded.

The case is forced, not hoped for: the server runs in a child process with ``SCHED_IDLE``
(it runs only when nothing else wants its CPU) and pinned to one CPU, with a burner pinned
to the same CPU.  A thread in it wakes every 0.5 ms, as a server with a short poll interval
does; each wake-up then waits in the run queue, so the kernel counts the server runnable
most of the time (``schedstat``) while it uses almost no CPU (``/proc/<pid>/stat``).  That
is what a loaded CI machine did to an idle HTTP server ("runnable 26%" at 0% of a CPU).  The
control runs the same row with the floor at 0 and must see the server runnable, so the test
shows the condition was produced before it trusts the verdict.  An unbounded server starved
that way takes almost nothing from never-readers, as a bounded one that stopped reading does.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from pytest_multiconn.suite.model import NOTE, PASS
from pytest_multiconn.suite.rows import idle
from pytest_multiconn.suite.runner import run_server_checks

ROW = "silent+never_close"

# The starved server: SCHED_IDLE, pinned to the burner's CPU, a 0.5 ms ticker beside an
# EchoServer (which itself wakes only for events); prints its port, runs until stdin closes.
SERVER = """
import os, sys, threading
from pytest_multiconn import EchoServer
os.sched_setaffinity(0, {int(sys.argv[1])})
stop = threading.Event()
def tick():
    while not stop.wait(0.0005):
        pass
# "unbounded": it never pauses reading (a 1 GiB high-water mark), so it buffers what a
# never-reader asks for without bound, when it gets the CPU to.
options = {"high_water": 1 << 30} if sys.argv[2] == "unbounded" else {}
with EchoServer(**options) as server:
    if sys.argv[2] == "ticker":
        threading.Thread(target=tick, daemon=True).start()
    # Started at the normal policy (imports are slow at SCHED_IDLE), then every thread is
    # moved to SCHED_IDLE: on Linux the policy is a thread's, not the process's.
    for tid in os.listdir("/proc/self/task"):
        os.sched_setscheduler(int(tid), os.SCHED_IDLE, os.sched_param(0))
    print(server.port, flush=True)
    sys.stdin.read()
    stop.set()
"""
BURNER = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True: pass\n"


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"the starved server printed no port within {timeout}s")
    return proc.stdout.readline().strip()


def _stop(proc: subprocess.Popen[str]) -> None:
    # Back to the normal policy first where allowed: even exiting takes CPU, and at SCHED_IDLE
    # any other busy process on that CPU (another test, a burner) delays it by seconds.
    for tid in _listdir(f"/proc/{proc.pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


Starved = Callable[[str], tuple[tuple[str, int], int]]


@pytest.fixture
def starved_server() -> Iterator[Starved]:
    """A factory: ``starved_server(kind)`` starts a loopback echo server in a child process
    starved of CPU ("ticker": idle, but a thread wakes every 0.5 ms; "unbounded": it never
    pauses reading) and returns (address, pid).  Function scope; teardown kills the burner,
    then the server."""
    if not hasattr(os, "SCHED_IDLE") or not hasattr(os, "sched_setaffinity"):
        pytest.skip("needs Linux's SCHED_IDLE and CPU affinity")
    cpu = max(os.sched_getaffinity(0))
    burners: list[subprocess.Popen[str]] = []
    servers: list[subprocess.Popen[str]] = []

    def start(kind: str) -> tuple[tuple[str, int], int]:
        burners.append(subprocess.Popen([sys.executable, "-c", BURNER, str(cpu)], text=True))
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(cpu), kind], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        servers.append(server)
        return ("127.0.0.1", int(_read_line(server, 60))), server.pid

    try:
        yield start
    finally:
        # Burners first: a SCHED_IDLE process needs a turn on its CPU even to exit.
        for proc in burners + servers:
            _stop(proc)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/schedstat")
def test_a_starved_idle_server_is_not_called_a_spinner(
    starved_server: Starved, monkeypatch: pytest.MonkeyPatch
) -> None:
    address, pid = starved_server("ticker")
    # The control: without the floor, the same row sees it runnable and calls it a spinner.
    # Up to 3 tries: the kernel adds a wait to schedstat only once the thread gets its turn,
    # so a window in which the ticker never ran shows no wait at all (1 run in about 10).
    monkeypatch.setattr(idle, "SPINNER_MIN_SHARE", 0.0)
    controls = []
    for _ in range(3):
        controls.append(run_server_checks(address, pid=pid, only=[ROW]).rows[-1])
        if not controls[-1].passed:
            break
    assert not controls[-1].passed, (
        f"the server was not starved (the test's condition was not produced): {controls}")
    assert "runnable" in controls[-1].detail, controls[-1]
    monkeypatch.undo()
    row = run_server_checks(address, pid=pid, only=[ROW]).rows[-1]
    assert row.passed, f"an idle server starved of CPU was called a spinner: {row.detail}"
    assert "idle connections cost" in row.detail


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/<pid>/schedstat")
def test_a_starved_unbounded_server_gets_no_verdict_instead_of_a_pass(
    starved_server: Starved,
) -> None:
    # Starved, it takes (almost) nothing from the never-readers, which looked like a server
    # that stops reading: "held at most 0 B per never-reader; stopped reading from 3 of 3",
    # a pass for a server that never pauses reading.
    # Two answers are right: no verdict (it was starved), or "buffers without bound" when
    # even at SCHED_IDLE it got the few ms of CPU that reading a megabyte takes (0.3-0.9% of
    # a CPU over the row's seconds: seen once in 16 loaded runs).  A pass is the bug.
    address, pid = starved_server("unbounded")
    row = run_server_checks(address, pid=pid, only=["never_read"]).rows[-1]
    assert row.status != PASS, f"a starved unbounded server was called bounded: {row}"
    if row.status == NOTE:
        assert "no verdict: the server was starved of CPU" in row.detail, row
    else:
        assert "buffers without bound" in row.detail, row
