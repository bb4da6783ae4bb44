"""A failing run fails at once where the failure is already certain (issue 22, item 6): a
reply that already differs, a server that closed.  Every client here has a 30 s timeout;
a bounded guard fails the test if a call waits anything like it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from pytest_multiconn import ClientResults, MultiConnClient
from pytest_multiconn.exchanges import Lines
from pytest_multiconn.faults import HalfClose, NeverClose, PartialSend
from pytest_multiconn.fixtures import ClientRunner
from pytest_multiconn.servers import ProtocolServer

#: The clients' timeout: a verdict that waits for it is the bug.
TIMEOUT = 30.0
#: How long the guard lets a call run (far more than any early verdict needs).
GUARD = 10.0
#: What "well before the timeout" means here: a generous margin, not a tight timing.
PROMPT = 5.0


class WrongAtOnce:
    """Answers ``NO`` to the first bytes it receives, then nothing more; never closes."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.answered = False

    def data_received(self, data: bytes) -> None:
        if not self.answered:
            self.answered = True
            self.transport.write(b"NO\n")

    def eof_received(self) -> bool:
        return True  # stay half-open: only the client's verdict ends the connection

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class ClosesAtOnce:
    """Reads what comes and closes without answering."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.close()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        pass


def _guarded(call: Callable[[], ClientResults]) -> tuple[ClientResults, float]:
    """Run ``call`` in a thread, bounded by GUARD; its results and how long it took."""
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(call())
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=run, name="early-verdict-client", daemon=True)
    thread.start()
    thread.join(GUARD)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), (
        f"the client was still waiting after {GUARD}s of its {TIMEOUT}s timeout: it waits "
        "for the timeout instead of failing at once"
    )
    (outcome,) = box
    if isinstance(outcome, BaseException):
        raise outcome
    assert isinstance(outcome, ClientResults)
    return outcome, elapsed


def _failed_early(results: ClientResults, elapsed: float) -> str:
    assert not results.ok, results
    text = "\n".join(str(r) for r in results.failed)
    assert "timed out" not in text, text
    assert elapsed < PROMPT, f"took {elapsed:.1f}s of a {TIMEOUT}s timeout:\n{text}"
    return text


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"exchange": Lines(), "requests": 3},
        {"faults": [PartialSend(max_chunk=7)]},
        {"faults": [NeverClose()]},
        {"faults": [HalfClose()]},
        {"exchange": Lines(), "requests": 3, "faults": [PartialSend(max_chunk=7)]},
    ],
    ids=["echo", "lines", "echo+partial-send", "echo+never-close", "echo+half-close",
         "lines+partial-send"],
)
def test_a_reply_that_already_differs_fails_at_once(kwargs: dict[str, Any]) -> None:
    with ProtocolServer(WrongAtOnce) as server:
        results, elapsed = _guarded(
            lambda: MultiConnClient(server.address, 2, timeout=TIMEOUT, **kwargs).run()
        )
        text = _failed_early(results, elapsed)
        assert all(r.first_mismatch == 0 or r.problem for r in results.failed), text


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"exchange": Lines(), "requests": 3}, {"faults": [PartialSend(max_chunk=7)]}],
    ids=["echo", "lines", "echo+partial-send"],
)
def test_a_server_that_closes_fails_at_once(kwargs: dict[str, Any]) -> None:
    with ProtocolServer(ClosesAtOnce) as server:
        results, elapsed = _guarded(
            lambda: MultiConnClient(server.address, 2, timeout=TIMEOUT, **kwargs).run()
        )
        _failed_early(results, elapsed)


def test_the_client_fixture_fails_at_once(multiconn_client: ClientRunner) -> None:
    with ProtocolServer(WrongAtOnce) as server:
        results, elapsed = _guarded(
            lambda: multiconn_client(server.address, 3, timeout=TIMEOUT)
        )
        _failed_early(results, elapsed)


class HalfAnswer:
    """Answers the first request with the head of a wrong reply whose rest never comes."""

    head = b""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.answered = False

    def data_received(self, data: bytes) -> None:
        if not self.answered:
            self.answered = True
            self.transport.write(self.head)

    def eof_received(self) -> bool:
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class HTTP500Head(HalfAnswer):
    head = b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\nthe first bytes"


class RESPHead(HalfAnswer):
    head = b"-ERR no such comm"  # no CRLF yet: RESP cannot frame it


@pytest.mark.parametrize(
    ("handler", "exchange", "says"),
    [
        (HTTP500Head, "http", "status 500, expected 200"),
        (RESPHead, "resp", "error reply"),
    ],
    ids=["http", "resp"],
)
def test_a_parsed_reply_that_already_differs_fails_at_once(
    handler: type[HalfAnswer], exchange: str, says: str
) -> None:
    from pytest_multiconn.exchanges import HTTP, RESP

    ex = HTTP() if exchange == "http" else RESP(commands=[("PING",), ("GET", "k")])
    with ProtocolServer(handler) as server:
        results, elapsed = _guarded(
            lambda: MultiConnClient(server.address, 2, timeout=TIMEOUT, exchange=ex).run()
        )
        text = _failed_early(results, elapsed)
        assert says in text, text
        assert "before the reply was complete" in text, text
