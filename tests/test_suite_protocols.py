"""The suite for any protocol, judged against real peers: redis-server, the standard
library's HTTP servers, and servers broken on purpose (tests/peer_servers.py).

Every peer runs in its own process (the suite measures it from outside, as it would measure
yours); each is killed at teardown.
"""

from __future__ import annotations

import ast
import contextlib
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pytest_multiconn.cli import main
from pytest_multiconn.core.wait import wait_until
from pytest_multiconn.exchanges import HTTP, RESP, Lines
from pytest_multiconn.suite import run_check, run_checks

PEERS = Path(__file__).with_name("peer_servers.py")


@contextlib.contextmanager
def _process(argv: list[str], log_path: Path, ready: str) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until(lambda: ready in log_path.read_text() or proc.poll() is not None, 20,
                   f"{argv[0]} to start", describe=lambda: log_path.read_text()[-800:])
        if proc.poll() is not None:
            raise RuntimeError(f"{argv} exited {proc.returncode}: {log_path.read_text()[-800:]}")
        yield proc
    finally:
        proc.kill()
        proc.wait(10)


@contextlib.contextmanager
def peer(kind: str, tmp_path: Path) -> Iterator[tuple[str, int]]:
    log = tmp_path / f"{kind}.log"
    with _process([sys.executable, str(PEERS), kind], log, "Listening on"):
        line = next(ln for ln in log.read_text().splitlines() if "Listening on" in ln)
        yield ast.literal_eval(line.split("Listening on ", 1)[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(tmp_path: Path, *extra: str) -> Iterator[tuple[str, int]]:
    """redis-server on a free port (``--port 0`` is not supported: pick one, retry on a clash),
    no persistence, killed at teardown."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (.ci/run installs it with apt-get; this "
                    "machine could not)")
    for attempt in range(5):
        port = _free_port()
        log = tmp_path / f"redis-{port}.log"
        argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--dir", str(tmp_path), *extra]
        try:
            with _process(argv, log, "Ready to accept connections"):
                yield ("127.0.0.1", port)
                return
        except RuntimeError:
            if "Address already in use" not in log.read_text() or attempt == 4:
                raise


# --- redis-server -------------------------------------------------------------------------


def test_redis_with_an_output_limit_passes_the_suite(tmp_path: Path) -> None:
    with redis_server(tmp_path, "--client-output-buffer-limit", "normal 1mb 1mb 0") as address:
        report = run_checks(address, RESP(), seed=11)
    assert report.ok, report.table()
    never = next(r for r in report.rows if r.fault == "never_read")
    assert "closed 3 of 3" in never.detail, never.detail


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_redis_default_config_fails_on_unbounded_buffering(tmp_path: Path, seed: int) -> None:
    with redis_server(tmp_path) as address:
        row = run_check("never_read", address, RESP(), seed=seed)
    assert not row.passed
    assert "buffers without bound" in row.detail, row.detail


def test_cli_suite_protocol_redis(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with redis_server(tmp_path, "--client-output-buffer-limit", "normal 1mb 1mb 0") as address:
        assert main(["suite", "127.0.0.1", str(address[1]), "--protocol", "redis",
                     "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "fault-injection suite (redis)" in out
    assert "OK: all 12 checks passed (seed 3)" in out


# --- HTTP -----------------------------------------------------------------------------------


def test_threaded_http11_server_passes(tmp_path: Path) -> None:
    with peer("threaded-http11", tmp_path) as address:
        report = run_checks(address, HTTP(), seed=21)
    assert report.ok, report.table()
    assert next(r for r in report.rows if r.fault == "pipelining").result == "pass"


def test_python_m_http_server_passes_and_pipelining_does_not_apply(tmp_path: Path) -> None:
    port = _free_port()
    argv = [sys.executable, "-u", "-m", "http.server", str(port), "--bind", "127.0.0.1",
            "--directory", str(tmp_path)]
    with _process(argv, tmp_path / "http.log", "Serving HTTP"):
        report = run_checks(("127.0.0.1", port), HTTP(), seed=22)
    assert report.ok, report.table()
    rows = {r.fault: r for r in report.rows}
    assert rows["pipelining"].result == "n/a"
    assert "closes after each reply" in rows["pipelining"].detail


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_serial_http_server_serves_one_connection_at_a_time(tmp_path: Path, seed: int) -> None:
    with peer("serial-http", tmp_path) as address:
        row = run_check("concurrency", address, HTTP(), seed=seed)
    assert not row.passed
    assert "serves one connection at a time" in row.detail


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_http_server_buffering_for_a_never_reader_fails(tmp_path: Path, seed: int) -> None:
    with peer("buffering-http", tmp_path) as address:
        row = run_check("never_read", address, HTTP(), seed=seed)
    assert not row.passed
    assert "buffers without bound" in row.detail, row.detail


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_line_server_dropping_split_requests_fails(tmp_path: Path, seed: int) -> None:
    with peer("dropping-line", tmp_path) as address:
        assert run_check("exchange", address, Lines(), seed=seed).passed  # whole lines work
        row = run_check("partial_send", address, Lines(), seed=seed)
    assert not row.passed
    assert "1 byte at a time" in row.detail, row.detail
