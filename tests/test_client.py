"""MultiConnClient against good and bad servers, over real loopback sockets."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest

from pytest_multiconn import EchoMismatch, EchoServer, MultiConnClient, RemoteBindError, run_clients
from pytest_multiconn.client import DEFAULT_MESSAGES
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.exchanges import Exchange
from pytest_multiconn.faults import ClientFault, HalfClose, PartialSend
from pytest_multiconn.lowlevel import EchoConnection


@pytest.fixture
def server() -> Iterator[EchoServer]:
    with EchoServer() as srv:
        yield srv


def server_with(connection_class: type[EchoConnection]) -> EchoServer:
    class Custom(EchoServer):
        def make_connection(self, sock: socket.socket, addr: object) -> Connection:
            return connection_class(self, sock, addr)

    return Custom()


class Corrupting(EchoConnection):
    def data_received(self, data: bytes) -> None:
        self.write(data.replace(b"2", b"X"))


class Silent(EchoConnection):
    def data_received(self, data: bytes) -> None:
        """Read and never answer."""


class HangUpAfterFive(EchoConnection):
    # It reads all 44 bytes before it answers: closing with unread bytes would send an RST
    # instead of a FIN (see Connection.close), and the client would see a reset instead.
    def data_received(self, data: bytes) -> None:
        if self.bytes_in >= 44:
            self.write(b"Messa")
            self.finish()


def test_every_connection_echoes_the_tutorial_messages(server: EchoServer) -> None:
    results = MultiConnClient(server.address, 10).run()
    assert results.ok
    assert [r.conn_id for r in results] == list(range(1, 11))
    total = sum(len(m) for m in DEFAULT_MESSAGES)
    assert all(r.sent == r.received == r.expected == total for r in results)
    assert server.wait_for_closed(10).bytes_in == 10 * total


def test_custom_messages_and_shorthand(server: EchoServer) -> None:
    results = run_clients(server.address, 3, messages=[b"a" * 100_000, b"", b"b"])
    results.check()
    assert {r.received for r in results} == {100_001}


def test_a_corrupted_echo_is_reported_with_its_offset() -> None:
    with server_with(Corrupting) as server:
        results = MultiConnClient(server.address, 2).run()
    assert not results.ok
    first = results[0]
    assert not first.matched
    assert first.first_mismatch == len(b"Message 1 from client.Message ")
    with pytest.raises(
        EchoMismatch, match=r"(?s)2 of 2 connections failed.*echo differed at byte 30"
    ):
        results.check()


def test_a_silent_server_times_out_within_the_bound() -> None:
    with server_with(Silent) as server:
        started = time.monotonic()
        results = MultiConnClient(server.address, 3, timeout=0.2).run()
        elapsed = time.monotonic() - started
    assert elapsed < 5
    assert all(r.error and "timed out after 0.2s" in r.error for r in results)
    assert "received 0 B" in str(results[0].error)


def test_a_server_that_hangs_up_early_is_reported() -> None:
    with server_with(HangUpAfterFive) as server:
        results = MultiConnClient(server.address, 1).run()
    (result,) = results
    assert result.received == 5
    assert result.error == "server closed the connection after echoing 5 of 44 bytes"
    assert "eof-in" in result.transcript


def test_connection_refused_is_a_result_not_an_exception() -> None:
    # A bound socket that never listens: connecting to it is refused, and nobody else can
    # take the port while we hold it.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        results = MultiConnClient(holder.getsockname(), 2, timeout=5).run()
    assert [r.ok for r in results] == [False, False]
    assert all("refused" in (r.error or "") for r in results)


def test_observer_sees_the_tutorial_events(server: EchoServer) -> None:
    events: list[tuple[str, int, bytes | None]] = []
    MultiConnClient(server.address, 1, on_event=lambda *e: events.append(e)).run().check()
    kinds = [e[0] for e in events]
    assert kinds[:3] == ["start", "send", "send"]
    assert kinds[-1] == "close"
    assert b"".join(e[2] or b"" for e in events if e[0] == "recv") == b"".join(DEFAULT_MESSAGES)


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        ((("127.0.0.1", 1), 0), {}, ValueError, "num_connections must be an integer >= 1"),
        ((("127.0.0.1", 1), 1), {"timeout": 0}, ValueError, "timeout must be a positive"),
        ((("192.0.2.1", 1), 1), {}, RemoteBindError, "refusing to connect to '192.0.2.1'"),
        (((1, 2), 1), {}, ValueError, "host must be a non-empty string"),
        ((42, 1), {}, ValueError, "address must be"),
    ],
)
def test_bad_arguments_are_rejected(
    args: tuple[object, ...], kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        MultiConnClient(*args, **kwargs)  # type: ignore[arg-type]


def test_a_client_runs_once(server: EchoServer) -> None:
    client = MultiConnClient(server.address, 1)
    client.run().check()
    with pytest.raises(RuntimeError, match="already ran"):
        client.run()


_EMFILE_CHILD = """
import gc, os, resource, sys
from pytest_multiconn import MultiConnClient

gc.disable()  # what a failed run leaves open must be closed by the run, not by a collection
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
port = int(sys.argv[1])
leaks = []
for extra in range(0, 24):
    before = len(os.listdir("/proc/self/fd")) - 1  # minus the one listdir itself used
    # EMFILE after `extra` more descriptors: in the loop's selector or socketpair, or at the
    # (extra - 2)th connection's socket.
    resource.setrlimit(resource.RLIMIT_NOFILE, (before + extra, hard))
    error = None
    try:
        MultiConnClient(("127.0.0.1", port), 200, timeout=10).run()
    except OSError as exc:
        error = exc
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    after = len(os.listdir("/proc/self/fd")) - 1
    if error is None:
        leaks.append(f"extra={extra}: run() did not fail")
    elif after != before:
        leaks.append(f"extra={extra}: {after - before} descriptors still open ({error})")
    del error
print("\\n".join(leaks) or "no leaks")
"""


def test_a_run_that_fails_with_emfile_closes_every_descriptor(server: EchoServer) -> None:
    import subprocess
    import sys

    child = subprocess.run(
        [sys.executable, "-c", _EMFILE_CHILD, str(server.port)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.strip() == "no leaks"



@dataclass(frozen=True)
class _Upper(Exchange):
    """Exact replies that are not an echo: the server answers each request in capitals."""

    name: ClassVar[str] = "upper"

    def requests(self, count: int, rng: random.Random, size: int | None = None) -> list[bytes]:
        return [b"abcdefghij"] * count

    def frame(self, request: bytes, buf: bytes, eof: bool = False) -> int | None:
        return len(request) if len(buf) >= len(request) else None

    def expected(self, request: bytes) -> bytes:
        return request.upper()


class _AnswersFiveThenHangsUp(EchoConnection):
    def data_received(self, data: bytes) -> None:
        if self.bytes_in >= 20:  # both requests are read: close with a FIN, not an RST
            self.write(b"ABCDE")
            self.finish()


@pytest.mark.parametrize(
    ("faults", "error"),
    [
        ((), "server closed the connection after 5 of the 20 B of replies expected"),
        (
            (PartialSend(),),
            "server closed the connection after 5 of the 20 B of replies expected",
        ),
        (
            (HalfClose(),),
            "bytes lost on half-close: the server closed after 5 of the 20 B of replies "
            "expected (15 lost)",
        ),
    ],
    ids=["no-fault", "partial-send", "half-close"],
)
def test_a_non_echo_server_that_hangs_up_early_is_not_said_to_echo(
    faults: tuple[ClientFault, ...], error: str
) -> None:
    with server_with(_AnswersFiveThenHangsUp) as server:
        (result,) = MultiConnClient(
            server.address, 1, requests=2, exchange=_Upper(), faults=faults
        ).run()
    assert result.received == 5
    assert result.error == error
