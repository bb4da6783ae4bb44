"""The fault-injection suite: passes on our server, fails with the right reason on the
tutorial's (tests/tutorial_server.py, a faithful copy run as a subprocess)."""

from __future__ import annotations

import ast
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_multiconn import EchoServer
from pytest_multiconn.cli import main
from pytest_multiconn.core.wait import wait_until
from pytest_multiconn.suite.checks import (
    CHECK_NAMES,
    ContractBreak,
    check_echo_server,
    run_check,
    run_suite,
)
from pytest_multiconn.suite.probes import listener_pid

TUTORIAL = Path(__file__).with_name("tutorial_server.py")


# Runs the tutorial unchanged, but every socket it accepts gets a 4 KiB SO_SNDBUF: its echo
# then waits in its own memory instead of the kernel's, so closing at EOF loses bytes every
# time (with default loopback buffers the kernel often absorbed the whole echo, and the loss
# depended on timing).
SMALL_SNDBUF = """
import runpy, socket, sys
accept = socket.socket.accept
def small_sndbuf_accept(self):
    conn, addr = accept(self)
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    return conn, addr
socket.socket.accept = small_sndbuf_accept
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.fixture
def tutorial(tmp_path: Path) -> Iterator[tuple[tuple[str, int], int]]:
    """The tutorial's server in a subprocess (small SO_SNDBUF on accepted sockets): yields
    ((host, port), pid); killed at teardown."""
    log_path = tmp_path / "tutorial.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", SMALL_SNDBUF, str(TUTORIAL), "127.0.0.1", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        def listening() -> str | None:
            lines = log_path.read_text().splitlines(keepends=True)
            return lines[0] if lines and lines[0].endswith("\n") else None

        line = wait_until(listening, 20, "the tutorial server to listen",
                          describe=lambda: f"exit={proc.poll()} log={log_path.read_text()[:500]!r}")
        address = ast.literal_eval(line.split("Listening on ", 1)[1])
        yield address, proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def test_suite_passes_on_our_server() -> None:
    lines: list[str] = []
    with EchoServer() as server:
        assert run_suite(server.address, seed=1, out=lines.append)
        report = check_echo_server(server.address, seed=2)
    assert [r.fault for r in report.rows] == list(CHECK_NAMES)
    assert report.pid is not None  # found our own process from the port
    text = "\n".join(lines)
    assert "OK: all" in text
    assert "FAIL" not in text
    assert "memory +" in text  # the measured rows really measured
    assert "cost" in text


@pytest.mark.load_sensitive  # the idle row measures the tutorial's CPU share
def test_tutorial_spins_while_idle(tutorial) -> None:
    address, pid = tutorial
    assert listener_pid(address) == pid
    row = run_check("silent+never_close", address, seed=1, pid=pid)
    assert not row.passed
    assert "it spins" in row.detail


@pytest.mark.load_sensitive  # the never-read row measures memory growth against time
def test_tutorial_is_never_called_bounded(tutorial) -> None:
    # Measured: the tutorial appends every read to its buffer (unbounded), but it writes the
    # whole buffer's repr to its log on every write event, so it crawls: within the row its
    # memory may not pass the limit.  What it must never get is a pass: it fails (memory
    # past the limit, or another client starved meanwhile) or, still reading from the
    # never-readers at the end with its memory flat, is "inconclusive" (a note).
    address, pid = tutorial
    row = run_check("never_read", address, seed=1, pid=pid)
    assert row.result in ("FAIL", "note"), row
    assert any(cause in row.detail for cause in (
        "buffers without bound", "could not be served", "starved", "inconclusive")), row


def test_tutorial_loses_bytes_on_half_close(tutorial) -> None:
    address, _ = tutorial
    row = run_check("half_close", address, seed=1)
    assert not row.passed
    assert "bytes lost on half-close" in row.detail


def test_tutorial_does_echo_a_plain_exchange(tutorial) -> None:
    # The reference is bad, not broken: the plain exchange works, so the failures above are
    # about the faults, not about a server that never worked.
    address, _ = tutorial
    assert run_check("exchange", address, seed=1).passed


def test_check_echo_server_raises_on_first_break(tutorial) -> None:
    address, _ = tutorial
    with pytest.raises(ContractBreak, match="seed 3") as info:
        check_echo_server(address, seed=3)
    text = str(info.value)
    assert "broke 1 contract(s)" in text  # it stopped at the first
    assert any(cause in text for cause in ("buffers without bound", "spins", "starved"))


def test_cli_suite_exit_status(tutorial, capsys: pytest.CaptureFixture[str]) -> None:
    address, _ = tutorial
    with EchoServer() as server:
        assert main(
            ["suite", "127.0.0.1", str(server.port), "--seed", "8", "--only", "exchange"]
        ) == 0
    assert main(["suite", "127.0.0.1", str(address[1]), "--only", "half_close"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert "bytes lost on half-close" in out


def test_cli_suite_refuses_remote_host(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["suite", "192.0.2.1", "80"]) == 2
    assert "allow" in capsys.readouterr().err


def test_unknown_check_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="choose from"):
        run_check("nope", ("127.0.0.1", 1))


def test_pyargs_suite_against_target(pytester: pytest.Pytester) -> None:
    with EchoServer() as server:
        result = pytester.runpytest_subprocess(
            "--pyargs", "pytest_multiconn.suite", "--multiconn-target",
            f"127.0.0.1:{server.port}", "-p", "no:cacheprovider",
        )
    result.assert_outcomes(passed=len(CHECK_NAMES))


def test_pyargs_suite_without_target_is_a_usage_error(pytester: pytest.Pytester) -> None:
    # A CI job that forgets the option must not pass with everything skipped.
    result = pytester.runpytest_subprocess("--pyargs", "pytest_multiconn.suite")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--multiconn-target HOST:PORT*"])


def test_suite_against_a_closed_port_says_so_once(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: refuses connections
        assert main(["suite", "127.0.0.1", str(port)]) == 1
    out = capsys.readouterr().out
    assert out.count("nothing listens there") == 2  # the row, and the summary line
    assert "FAIL" in out
    assert "exchange" not in out  # no check ran


def test_pyargs_suite_fails_with_reason_on_tutorial(pytester: pytest.Pytester, tutorial) -> None:
    address, _ = tutorial
    result = pytester.runpytest_subprocess(
        "--pyargs", "pytest_multiconn.suite", "--multiconn-target", f"127.0.0.1:{address[1]}",
        "-k", "half_close",
    )
    result.assert_outcomes(failed=1, deselected=len(CHECK_NAMES) - 1)
    result.stdout.fnmatch_lines(["*bytes lost on half-close*"])
