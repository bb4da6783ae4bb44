"""The client suite (``check_client``/``acheck_client``) against real clients: redis-py (sync
and asyncio) before a real redis-server, httpx before our HTTP server, and small socket
clients of our own, one of them broken on purpose and one with no timeout at all.

Every verdict below was checked by hand against the transcript of a run with the same seed;
the comments say what the client did.  Waits are bounded (the suite bounds every call itself,
``patience``); nothing sleeps to synchronise.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_multiconn.core.wait import wait_until
from pytest_multiconn.errors import ContractBreak
from pytest_multiconn.exchanges import HTTP, RESP, Lines
from pytest_multiconn.suite import CLIENT_ROW_NAMES, acheck_client, check_client
from pytest_multiconn.suite.client.framing import split_requests
from pytest_multiconn.suite.model import SuiteReport
from pytest_multiconn.suite.reports import write_html, write_json, write_junit_xml

STALL_ROWS = ("latency_beyond", "stall_before_reply", "stall_mid_reply", "blackhole")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(proc: subprocess.Popen[bytes], log: Path) -> None:
    wait_until(lambda: "Ready to accept" in log.read_text() or proc.poll() is not None,
               20, "redis-server to start", describe=lambda: log.read_text()[-800:])


@contextlib.contextmanager
def redis_server(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """redis-server on a free port, no persistence, killed at teardown (skips without it)."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not installed (.ci/run installs it with apt-get; this "
                    "machine could not)")
    for attempt in range(5):
        port = _free_port()
        log = tmp_path / f"redis-{port}.log"
        argv = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                "no", "--dir", str(tmp_path)]
        with log.open("w") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(proc, log)
            if proc.poll() is None:
                yield ("127.0.0.1", port)
                return
            if "Address already in use" not in log.read_text() or attempt == 4:
                raise RuntimeError(f"redis-server exited: {log.read_text()[-800:]}")
        finally:
            proc.kill()
            proc.wait(10)


def _close(clients: list[Any]) -> None:
    for client in clients:
        client.close()


def _rows(report: SuiteReport) -> dict[str, Any]:
    return {r.fault: r for r in report.rows}


# -- redis-py -----------------------------------------------------------------------------------


def test_redis_py_default_retry_incr_fails_naming_lost_reply_and_the_stretched_timeout(
    tmp_path: Path,
) -> None:
    redis = pytest.importorskip("redis")
    made_clients: list[Any] = []
    with redis_server(tmp_path) as address:

        @functools.cache
        def client(at: tuple[str, int]) -> Any:
            # redis-py's defaults, but for the timeout: its default retry is on.
            made = redis.Redis(host=at[0], port=at[1], socket_timeout=0.5,
                               socket_connect_timeout=0.5)
            made_clients.append(made)
            return made

        def call(at: tuple[str, int]) -> Any:
            return client(at).incr("hits")

        try:
            report = check_client(call, target=address, exchange=RESP(),
                                  expect=lambda v: isinstance(v, int), idempotent=False,
                                  timeout=0.5, seed=7, only=("lost_reply", "stall_before_reply"),
                                  patience=30, raise_on_failure=False)
        finally:
            _close(made_clients)
        with contextlib.closing(redis.Redis(host=address[0], port=address[1])) as direct:
            counter = int(direct.get("hits"))
    rows = _rows(report)
    assert not report.ok
    # The reply to INCRBY was lost once: redis-py retried on a new connection and the
    # counter moved by 2.
    lost = rows["lost_reply"]
    assert lost.result == "FAIL"
    assert lost.detail.startswith("re-sent a non-idempotent request: the server executed it 2 "
                                  "times"), lost.detail
    # The stall: 0.5 s per attempt, 4 attempts on new connections, exponential backoff in
    # between (each attempt re-sends INCRBY too): seconds, not half of one.
    stall = rows["stall_before_reply"]
    assert stall.result == "FAIL"
    took = re.search(r"raised TimeoutError after ([0-9.]+) s for a 0.5 s timeout \(bound 1 s = "
                     r"timeout 0.5 s \+ margin 0.5 s\)", stall.detail)
    assert took is not None, stall.detail
    assert float(took.group(1)) > 2.0, stall.detail
    assert stall.measurements["executions"] > 1
    # The suite counted at its proxy what the real server counted: the baseline's INCRBY,
    # plus every execution in the two rows.
    assert counter == 1 + lost.measurements["executions"] + stall.measurements["executions"]


@pytest.mark.load_sensitive  # the stall rows' timeouts must fire within 1 s of 0.5 s
def test_redis_py_without_retries_get_passes_every_row_that_applies(tmp_path: Path) -> None:
    redis = pytest.importorskip("redis")
    made_clients: list[Any] = []
    with redis_server(tmp_path) as address:
        with contextlib.closing(redis.Redis(host=address[0], port=address[1])) as direct:
            direct.set("k", "v")

        @functools.cache
        def client(at: tuple[str, int]) -> Any:
            made = redis.Redis(host=at[0], port=at[1], socket_timeout=0.5,
                               socket_connect_timeout=0.5, retry=None)
            made_clients.append(made)
            return made

        def call(at: tuple[str, int]) -> Any:
            return client(at).get("k")

        try:
            report = check_client(call, target=address, exchange=RESP(), expect=b"v",
                                  idempotent=True, timeout=0.5, seed=8)
        finally:
            _close(made_clients)
    rows = _rows(report)
    assert list(rows) == list(CLIENT_ROW_NAMES)
    assert report.ok, report.table()
    assert rows["stall_handshake"].result == "n/a"
    assert rows["corrupt_reply"].result == "note"
    for name in STALL_ROWS:
        assert "raised TimeoutError" in rows[name].detail, rows[name].detail
        assert rows[name].measurements["seconds"] < 1.0
    # Garbage and a flipped bit in the length are detected by its parser.
    assert "InvalidResponse" in rows["garbage_reply"].detail
    assert "raised ConnectionError" in rows["refused"].detail
    assert "(2 connections)" in rows["stale_connection"].detail
    # Every row carries its wire transcript.
    assert any("GET" in line for line in rows["baseline"].transcript)


def test_redis_asyncio_through_acheck_client(tmp_path: Path) -> None:
    aredis = pytest.importorskip("redis.asyncio")
    anyio = pytest.importorskip("anyio")
    import redis

    with redis_server(tmp_path) as address:
        with contextlib.closing(redis.Redis(host=address[0], port=address[1])) as direct:
            direct.set("k", "v")
        clients: dict[Any, Any] = {}

        def client(at: tuple[str, int], **options: Any) -> Any:
            key = (at, tuple(sorted(options)))
            if key not in clients:
                clients[key] = aredis.Redis(host=at[0], port=at[1], socket_timeout=0.5,
                                            socket_connect_timeout=0.5, **options)
            return clients[key]

        async def get(at: tuple[str, int]) -> Any:
            return await client(at, retry=None).get("k")

        async def incr(at: tuple[str, int]) -> Any:
            return await client(at).incr("hits")

        async def main() -> tuple[SuiteReport, str]:
            try:
                report = await acheck_client(get, target=address, exchange=RESP(),
                                             expect=b"v", idempotent=True, timeout=0.5, seed=9)
                with pytest.raises(ContractBreak) as caught:
                    await acheck_client(incr, target=address, exchange=RESP(),
                                        expect=lambda v: isinstance(v, int), idempotent=False,
                                        timeout=0.5, seed=9, only=("lost_reply",))
            finally:
                for made in clients.values():
                    await made.aclose()
            return report, str(caught.value)

        report, text = anyio.run(main)
    assert report.ok, report.table()
    rows = _rows(report)
    assert rows["stall_handshake"].result == "n/a"
    for name in STALL_ROWS:
        assert "raised TimeoutError" in rows[name].detail, rows[name].detail
    # The asyncio client retries the lost INCRBY by default too.
    assert "lost_reply: re-sent a non-idempotent request: the server executed it 2 times" in text


# -- httpx --------------------------------------------------------------------------------------

#: httpx 0.2x (timeout 0.5 s, no retries) against our HTTP server, seed 3, read by hand: the
#: outcome of each row and the exception it raised (or the value it returned).
HTTPX_VERDICTS = {
    "baseline": ("pass", "returned b'hello\\n'"),
    "sliced": ("pass", "returned b'hello\\n'"),  # h11 reads until the message is complete
    "coalesced": ("pass", "returned b'hello\\n'"),
    "latency_within": ("pass", "returned b'hello\\n'"),
    "latency_beyond": ("pass", "raised ReadTimeout"),  # its read timeout, at ~0.5 s
    "stall_before_reply": ("pass", "raised ReadTimeout"),
    "stall_mid_reply": ("pass", "raised ReadTimeout"),
    "stall_handshake": ("n/a", "no TLS here"),
    "blackhole": ("pass", "raised ReadTimeout"),
    "reset_before_reply": ("pass", "raised ReadError"),  # ECONNRESET
    "reset_mid_reply": ("pass", "raised ReadError"),
    "cut_reply": ("pass", "raised RemoteProtocolError"),  # "Server disconnected ..."
    "garbage_reply": ("pass", "raised RemoteProtocolError"),  # "illegal status line"
    "lost_reply": ("pass", "raised ReadError"),  # no retry of a read: raised, once
    "stale_connection": ("pass", "the next call returned b'hello\\n'"),  # pool saw the close
    "refused": ("pass", "raised ConnectError"),
    "corrupt_reply": ("note", "returned b'hello\\n'"),  # the flip hit a header it ignores
}


def test_httpx_every_row_verdict_checked_by_hand(tmp_path: Path) -> None:
    httpx = pytest.importorskip("httpx")
    clients: list[Any] = []

    @functools.cache
    def client(at: tuple[str, int]) -> Any:
        # verify=False: plain HTTP, and no 0.3 s of loading CA certificates inside the call.
        made = httpx.Client(base_url=f"http://{at[0]}:{at[1]}", timeout=0.5, verify=False)
        clients.append(made)
        return made

    def call(at: tuple[str, int]) -> bytes:
        response = client(at).get("/")
        response.raise_for_status()
        return bytes(response.content)

    try:
        report = check_client(call, exchange=HTTP(), expect=b"hello\n", idempotent=True,
                              timeout=0.5, seed=3)
    finally:
        for made in clients:
            made.close()
    rows = _rows(report)
    assert set(rows) == set(HTTPX_VERDICTS)
    seen = {name: (row.result, row.detail) for name, row in rows.items()}
    for name, (status, start) in HTTPX_VERDICTS.items():
        assert seen[name][0] == status, (name, seen[name])
        assert seen[name][1].startswith(start), (name, seen[name])
    # Same report formats as the server suite.
    data = json.loads(write_json(report, tmp_path / "client.json").read_text())
    assert data["protocol"] == "http client"
    assert len(data["rows"]) == len(CLIENT_ROW_NAMES)
    assert data["counts"] == {"pass": 15, "FAIL": 0, "n/a": 1, "note": 1}
    tree = ET.parse(write_junit_xml(report, tmp_path / "client.xml"))  # noqa: S314 - ours
    assert len(tree.getroot().findall(".//testcase")) == len(CLIENT_ROW_NAMES)
    assert "stale_connection" in write_html(report, tmp_path / "client.html").read_text()


# -- small clients of our own -------------------------------------------------------------------


def _one_recv(at: tuple[str, int]) -> bytes:
    """Broken on purpose: one recv() taken for the whole reply."""
    with socket.create_connection(at, timeout=0.5) as s:
        s.sendall(b"hello\n")
        return s.recv(65536)


def _read_line(s: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed after {data!r}")
        data += chunk
    return data


def _line_client(at: tuple[str, int]) -> bytes:
    with socket.create_connection(at, timeout=0.5) as s:
        s.sendall(b"hello\n")
        return _read_line(s)


def _no_timeout_client(at: tuple[str, int]) -> bytes:
    with socket.create_connection(at) as s:  # no timeout anywhere: blocks as long as it must
        s.sendall(b"hello\n")
        return _read_line(s)


def test_a_client_taking_one_recv_for_the_reply_fails_sliced_with_the_cause() -> None:
    with pytest.raises(ContractBreak) as caught:
        check_client(_one_recv, exchange=Lines(), expect=b"hello\n", idempotent=True,
                     timeout=0.5, seed=1, only=("baseline", "sliced", "coalesced"))
    text = str(caught.value)
    assert "1 contract(s)" in text, text
    assert "pass seed=1 to replay" in text, text
    # One read takes whatever bytes have arrived: b'h' on a quiet machine, more of the reply
    # when the client's thread was slow to run (b'hell' under CI's load); never all of it.
    assert re.search(r"sliced: returned b'h(|e|el|ell|ello)' after [0-9.]+ s, expected "
                     r"b'hello\\n': the "
                     r"reply came 1 byte per write, 1 ms apart: a client must read until the "
                     r"reply is complete, not take one read for the whole reply", text), text
    # A client that reads to the end of the line passes the same rows.
    report = check_client(_line_client, exchange=Lines(), expect=b"hello\n", idempotent=True,
                          timeout=0.5, seed=1, only=("baseline", "sliced", "coalesced"))
    assert report.ok, report.table()


def test_a_client_without_a_timeout_fails_the_stall_rows_without_hanging_the_suite() -> None:
    started = time.monotonic()
    report = check_client(_no_timeout_client, exchange=Lines(), expect=b"hello\n",
                          idempotent=True, timeout=0.5, seed=2, only=STALL_ROWS,
                          patience=1.5, raise_on_failure=False)
    took = time.monotonic() - started
    assert took < 4 * 1.5 + 5, took
    rows = _rows(report)
    for name in STALL_ROWS:
        assert rows[name].result == "FAIL"
        assert re.match(r"still waiting after 1\.[5-9] s for a 0.5 s timeout: abandoned",
                        rows[name].detail), rows[name].detail
    # The abandoned calls end once the suite stopped each row's proxy (their sockets closed).
    wait_until(lambda: not any(t.name == "multiconn-client-call"
                               for t in threading.enumerate()), 10,
               "the abandoned calls to end")


def test_a_trio_client_through_acheck_client() -> None:
    anyio = pytest.importorskip("anyio")
    pytest.importorskip("trio")

    async def acall(at: tuple[str, int]) -> bytes:
        with anyio.fail_after(0.5):
            stream = await anyio.connect_tcp(at[0], at[1])
            async with stream:
                await stream.send(b"hello\n")
                data = b""
                while not data.endswith(b"\n"):
                    data += await stream.receive()
                return data

    async def main() -> SuiteReport:
        return await acheck_client(acall, exchange=Lines(), expect=b"hello\n",
                                   idempotent=True, timeout=0.5, seed=4,
                                   only=("baseline", "sliced", "stall_mid_reply", "cut_reply",
                                         "refused"))

    report = anyio.run(main, backend="trio")
    assert report.ok, report.table()
    rows = _rows(report)
    assert "raised TimeoutError" in rows["stall_mid_reply"].detail
    # cut_reply: anyio raises EndOfStream (the server closed mid-line).
    assert "raised EndOfStream" in rows["cut_reply"].detail


def test_rows_and_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="no client-suite row 'nope'"):
        check_client(_line_client, exchange=Lines(), expect=b"x\n", idempotent=True,
                     timeout=0.5, only=("nope",))
    with pytest.raises(ValueError, match="timeout must be a positive"):
        check_client(_line_client, exchange=Lines(), expect=b"x\n", idempotent=True,
                     timeout=0)


def test_requests_are_framed_per_exchange() -> None:
    get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    post = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
    assert split_requests(HTTP(), get + post + b"GET") == ([get, post], b"GET")
    incr = b"*2\r\n$4\r\nINCR\r\n$1\r\nk\r\n"
    assert split_requests(RESP(), incr + b"PING\r\n" + incr[:5]) == ([incr, b"PING\r\n"],
                                                                       incr[:5])
