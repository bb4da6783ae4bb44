"""Thousands of function-scoped servers and clients under pytest-xdist, with zero failures.

Every server binds port 0 and keeps the bound socket, so two workers can never race for a
port; these runs are the evidence.  The generated project runs in a subprocess (xdist's
controller wants a process of its own), with ``filterwarnings = error`` so a leaked socket
fails it too.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

#: Two runs of 2,000 tests each, one with the other core loaded: soak-ish, the run's time is
#: the machine's.
pytestmark = pytest.mark.load_sensitive

#: Tests in each generated run: one server and one client (two connections) per test.
STRESS_TESTS = 2000

GENERATED = f"""
import os
import pytest

@pytest.mark.parametrize("i", range({STRESS_TESTS}))
def test_echo(i, multiconn_server, multiconn_client):
    message = b"message %d from worker %s" % (i, os.environ["PYTEST_XDIST_WORKER"].encode())
    multiconn_client(multiconn_server.address, 2, messages=[message]).check()
    stats = multiconn_server.wait_for_closed(2, timeout=10)
    assert stats.bytes_in == stats.bytes_out == 2 * len(message)
    worker = os.environ["PYTEST_XDIST_WORKER"]
    assert multiconn_server.loop.thread.name.startswith(f"multiconn-echo[{{worker}}:test_echo[")
"""

INI = """
[pytest]
filterwarnings = error
"""

# A bound on the CPU burner, in case the test is interrupted before it kills it.
BURN_SECONDS = 300

BURNER = f"""
import time
end = time.monotonic() + {BURN_SECONDS}
while time.monotonic() < end:
    pass
"""


@pytest.fixture
def stress_project(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeini(INI)
    pytester.makepyfile(test_generated=GENERATED)
    return pytester


@pytest.fixture
def busy_core() -> Iterator[subprocess.Popen[bytes]]:
    """A child process that spins on one core for the whole test; killed at teardown."""
    proc = subprocess.Popen([sys.executable, "-c", BURNER])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


def run_stress(pytester: pytest.Pytester) -> pytest.RunResult:
    result = pytester.runpytest_subprocess("-n", "2", "-q", "-p", "xdist", "-p", "no:cacheprovider",
                                           timeout=600)
    result.assert_outcomes(passed=STRESS_TESTS)
    assert result.ret == pytest.ExitCode.OK
    return result


def test_two_thousand_servers_across_two_workers(stress_project: pytest.Pytester) -> None:
    run_stress(stress_project)


def test_two_thousand_servers_with_the_other_core_loaded(
    stress_project: pytest.Pytester, busy_core: subprocess.Popen[bytes]
) -> None:
    run_stress(stress_project)
    assert busy_core.poll() is None, "the CPU burner ended before the run did"
