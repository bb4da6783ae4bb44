"""A multi-client datagram client: N sockets, M datagrams each, every echo checked.

:class:`MultiDatagramClient` runs a private selector loop in the caller's thread (no thread
of its own).  Each client socket is connected to the server's address (so it hears only that
address), sends its datagrams, then reads echoes until it has as many as it expects or the
timeout passes.  Each datagram carries ``<client>:<seq>:`` and filler up to ``size`` bytes,
so an echo tells which datagram it is, and the result per client says how many were lost,
duplicated, reordered (arrived after a later one) and corrupted (matches no datagram sent).

Without faults every datagram comes back once, so the client waits for ``datagrams`` echoes
each.  Behind a proxy that drops or duplicates, pass ``expect=proxy.wait_echo_settled``: once
everything is sent the client asks it how many datagrams each client will receive, and waits
for exactly those (no waiting out the timeout for datagrams that were dropped on purpose).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, overload

from pytest_multiconn.core.blocking import refuse_in_event_loop, to_thread
from pytest_multiconn.core.loop import DEFAULT_TIMEOUT, Loop
from pytest_multiconn.errors import EchoMismatch
from pytest_multiconn.faults.params import integer, seconds
from pytest_multiconn.udp.endpoint import (
    DatagramEndpoint,
    UDPTarget,
    address_of,
    connect_datagram,
)

#: ``expect(sent, timeout) -> received``: client address -> datagrams it will receive.
Expect = Callable[[Mapping[tuple[str, int], int], float], Mapping[tuple[str, int], int]]

MIN_SIZE = 16
MAX_SIZE = 60000


def payload(client: int, seq: int, size: int) -> bytes:
    """Datagram ``seq`` of client ``client``: a header and filler, ``size`` bytes in all."""
    head = b"%d:%d:" % (client, seq)
    filler = bytes((client * 31 + seq * 7 + i) % 94 + 33 for i in range(size - len(head)))
    return head + filler


@dataclass(frozen=True)
class DatagramClientResult:
    """What one client socket sent and got back."""

    index: int
    #: The client socket's own address (the proxy's session key).
    address: tuple[str, int]
    sent: int
    #: Echoes read, duplicates and corrupted ones included.
    received: int
    #: Datagrams sent of which no exact echo came back.
    lost: int
    #: Extra exact copies beyond the first.
    duplicated: int
    #: Exact echoes that arrived after the echo of a later datagram.
    reordered: int
    #: Echoes that are not exactly any datagram sent (changed, cut short).
    corrupted: int
    #: Sequence numbers in the order their first echoes arrived.
    order: tuple[int, ...]
    #: Every echo in arrival order.
    echoes: tuple[bytes, ...]
    #: Round-trip seconds of each datagram's first exact echo, by sequence number.
    rtts: Mapping[int, float]
    #: The datagrams sent, by sequence number.
    payloads: tuple[bytes, ...]

    @property
    def ok(self) -> bool:
        """Every datagram echoed once, unchanged, in order."""
        return (self.received == self.sent and not self.lost and not self.duplicated
                and not self.reordered and not self.corrupted)

    def __str__(self) -> str:
        return (f"client {self.index} {self.address}: sent={self.sent} received={self.received}"
                f" lost={self.lost} duplicated={self.duplicated} reordered={self.reordered}"
                f" corrupted={self.corrupted}")


class DatagramResults(Sequence[DatagramClientResult]):
    """One :class:`DatagramClientResult` per client; ``check()`` raises on any anomaly."""

    def __init__(self, results: list[DatagramClientResult], elapsed: float,
                 timed_out: bool) -> None:
        self._results = results
        self.elapsed = elapsed
        #: True if some client still expected echoes when the timeout passed.
        self.timed_out = timed_out

    @overload
    def __getitem__(self, i: int) -> DatagramClientResult: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[DatagramClientResult]: ...
    def __getitem__(self, i: int | slice) -> Any:
        return self._results[i]

    def __len__(self) -> int:
        return len(self._results)

    def __iter__(self) -> Iterator[DatagramClientResult]:
        return iter(self._results)

    def __repr__(self) -> str:
        return f"<DatagramResults {len(self)} clients elapsed={self.elapsed:.3f}s>"

    def total(self, field: str) -> int:
        """Sum of ``field`` (``"lost"``, ``"duplicated"``...) over every client."""
        return sum(int(getattr(r, field)) for r in self._results)

    def check(self) -> DatagramResults:
        """Raise :class:`EchoMismatch` unless every client got every echo once, unchanged."""
        bad = [r for r in self._results if not r.ok]
        if bad:
            raise EchoMismatch(
                f"{len(bad)} of {len(self)} UDP clients did not get a clean echo"
                + (" (timed out)" if self.timed_out else "") + ":\n"
                + "\n".join(f"  {r}" for r in bad[:10]))
        return self


class _Client:
    def __init__(self, index: int, endpoint_factory: Callable[[_Client], DatagramEndpoint],
                 payloads: list[bytes]) -> None:
        self.index = index
        self.payloads = payloads
        self.by_payload = {p: seq for seq, p in enumerate(payloads)}
        self.sent_at: dict[int, float] = {}
        self.echoes: list[bytes] = []
        self.arrived: list[float] = []
        self.endpoint = endpoint_factory(self)

    def receive(self, data: bytes, addr: Any) -> None:
        self.echoes.append(data)
        self.arrived.append(time.monotonic())

    def result(self) -> DatagramClientResult:
        seen: dict[int, int] = {}
        order: list[int] = []
        rtts: dict[int, float] = {}
        reordered = corrupted = 0
        highest = -1
        for data, when in zip(self.echoes, self.arrived, strict=True):
            seq = self.by_payload.get(data)
            if seq is None:
                corrupted += 1
                continue
            seen[seq] = seen.get(seq, 0) + 1
            if seen[seq] > 1:
                continue
            order.append(seq)
            rtts[seq] = when - self.sent_at.get(seq, when)
            if seq < highest:
                reordered += 1
            highest = max(highest, seq)
        sock_name = self.endpoint.sock.getsockname() if not self.endpoint.closed else ("", 0)
        return DatagramClientResult(
            index=self.index, address=(str(sock_name[0]), int(sock_name[1])),
            sent=len(self.sent_at), received=len(self.echoes),
            lost=len(self.payloads) - len(seen),
            duplicated=sum(n - 1 for n in seen.values()), reordered=reordered,
            corrupted=corrupted, order=tuple(order), echoes=tuple(self.echoes),
            rtts=rtts, payloads=tuple(self.payloads),
        )


class MultiDatagramClient:
    """``num_clients`` UDP sockets, each sending ``datagrams`` datagrams of ``size`` bytes to
    ``address`` and checking the echoes; :meth:`run` is bounded by ``timeout`` seconds.

    ``address`` is ``(host, port)`` on loopback (``allow_remote=True`` for others) or a
    started server or proxy (anything with ``.address``).  ``expect`` (see the module
    docstring) tells how many echoes each client should wait for once all are sent.
    """

    def __init__(
        self,
        address: UDPTarget,
        num_clients: int = 2,
        datagrams: int = 10,
        *,
        size: int = 32,
        timeout: float = DEFAULT_TIMEOUT,
        expect: Expect | None = None,
        allow_remote: bool = False,
    ) -> None:
        owner = type(self).__name__
        # Checked below, whatever it is: the caller may pass anything.
        target: Any = getattr(address, "address", address)
        try:
            host, port = target[0], target[1]
        except (TypeError, IndexError, KeyError):
            raise ValueError(f"{owner}: address must be (host, port) or a started server, "
                             f"got {address!r}") from None
        self.address = address_of(host, port, allow_remote=allow_remote, role="send to")
        self.num_clients = int(integer(1, 1000)(owner, "num_clients", num_clients))
        self.datagrams = int(integer(1, 100_000)(owner, "datagrams", datagrams))
        self.size = int(integer(MIN_SIZE, MAX_SIZE)(owner, "size", size))
        self.timeout = float(seconds(0.001)(owner, "timeout", timeout))
        if expect is not None and not callable(expect):
            raise TypeError(f"{owner}: expect must be callable, got {expect!r}")
        self.expect = expect

    async def arun(self) -> DatagramResults:
        """Awaitable twin of :meth:`run`: the client's loop runs in a worker thread, so a
        server on the caller's event loop (asyncio or trio) keeps serving.  Needs ``[async]``."""
        return await to_thread(self.run)

    def run(self) -> DatagramResults:
        """Send everything, read the echoes, and return the results (never raises on loss;
        ``results.check()`` does)."""
        refuse_in_event_loop("MultiDatagramClient.run()", "await client.arun()")
        start = time.monotonic()
        deadline = start + self.timeout
        loop = Loop("multiconn-udp-client")
        clients: list[_Client] = []
        try:
            def make(client: _Client) -> DatagramEndpoint:
                return DatagramEndpoint(loop, connect_datagram(self.address), client.receive,
                                        max_queue=self.datagrams, label=f"client {client.index}")

            for i in range(self.num_clients):
                clients.append(_Client(i, make, [payload(i, seq, self.size)
                                                 for seq in range(self.datagrams)]))
            for client in clients:
                client.endpoint.attach()
            # Interleave the clients' sends, one datagram each in turn, as concurrent
            # clients would; what the kernel cannot take now is queued and sent on EVENT_WRITE.
            for seq in range(self.datagrams):
                for client in clients:
                    client.sent_at[seq] = time.monotonic()
                    client.endpoint.send(client.payloads[seq])
            loop.run_until(lambda: all(not c.endpoint.queued for c in clients),
                           max(0.0, deadline - time.monotonic()))
            if self.expect is not None:
                sent = {_name(c): len(c.sent_at) for c in clients}
                try:
                    wanted = dict(self.expect(sent, max(0.001, deadline - time.monotonic())))
                except TimeoutError:
                    wanted = {}
                targets = [wanted.get(_name(c), self.datagrams) for c in clients]
            else:
                targets = [self.datagrams] * len(clients)
            met = loop.run_until(
                lambda: all(len(c.echoes) >= n for c, n in zip(clients, targets, strict=True)),
                max(0.0, deadline - time.monotonic()))
            # Read whatever else is already here (an unexpected extra copy), without waiting.
            loop.run_once(0)
            results = [c.result() for c in clients]
        finally:
            loop.close()
        loop.check()
        return DatagramResults(results, time.monotonic() - start, not met)


def _name(client: _Client) -> tuple[str, int]:
    name = client.endpoint.sock.getsockname()
    return str(name[0]), int(name[1])
