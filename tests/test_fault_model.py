"""The one fault model: parameters checked in one place, registries, replace(), seeding
labels, and custom faults of every family written against public types only."""

from __future__ import annotations

import dataclasses
import math
import random
import re
import socket
from dataclasses import KW_ONLY, dataclass
from typing import Any

import pytest

from helpers import recv_exactly
from pytest_multiconn import EchoServer, MultiConnClient
from pytest_multiconn.faults import (
    CLIENT_FAULTS,
    ClientConnectionAPI,
    ClientFault,
    ClientReset,
    Fault,
    FaultParameterError,
    FaultSession,
    HalfClose,
    PartialSend,
    Registry,
    Slicer,
    fault_rng,
)
from pytest_multiconn.faults.params import EPOLL_MAX_MS, check_of, integer, param, seconds
from pytest_multiconn.proxy import TOXICS, Latency, Stage, Toxic

REGISTRIES: list[Registry[Any]] = [CLIENT_FAULTS, TOXICS]
ALL = [cls for registry in REGISTRIES for cls in registry.values()]


def _checked_fields(cls: type[Fault]) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if check_of(f) is not None]


def _cases() -> list[Any]:
    cases = []
    for cls in ALL:
        for name in _checked_fields(cls):
            kinds = {f.name: f.type for f in dataclasses.fields(cls)}
            for value in ("1", "x", math.nan, math.inf, -math.inf, -1, True, [1]):
                if value is True and kinds[name] == "bool":
                    continue
                cases.append(pytest.param(cls, name, value, id=f"{cls.name}-{name}-{value!r}"))
    return cases


@pytest.mark.parametrize(("cls", "name", "value"), _cases())
def test_every_parameter_refuses_bad_values_naming_fault_parameter_and_value(
    cls: type[Fault], name: str, value: object
) -> None:
    # Before: probability="x" / idle-style "1" raised a raw TypeError from a comparison,
    # and inf or NaN were taken (then a timer killed the loop thread).
    with pytest.raises(FaultParameterError) as info:
        cls(**{**cls.quick, name: value})
    message = str(info.value)
    assert message.startswith(f"{cls.__name__}: {name} must be")
    assert message.endswith(f"got {value!r}")
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TypeError)  # code that caught either still does


DAY = 24 * 3600
TIMERS = [
    (PartialSend, "delay", 30 * DAY),
    (CLIENT_FAULTS["slow_reader"], "delay", 30 * DAY),
    (CLIENT_FAULTS["never_read"], "stall", 30 * DAY),
    (CLIENT_FAULTS["never_read"], "duration", 30 * DAY),
    (Latency, "ms", EPOLL_MAX_MS + 1),
    (Latency, "jitter", EPOLL_MAX_MS + 1),
    (TOXICS["timeout"], "ms", 30 * DAY * 1000),
    (TOXICS["reset_peer"], "timeout_ms", 30 * DAY * 1000),
    (TOXICS["slow_close"], "delay_ms", 30 * DAY * 1000),
    (TOXICS["slicer"], "delay_us", 30 * DAY * 10**6),
]


@pytest.mark.parametrize(("cls", "name", "value"), TIMERS,
                         ids=[f"{c.name}-{n}" for c, n, _ in TIMERS])
def test_timers_past_epolls_limit_are_refused(cls: type[Fault], name: str, value: float) -> None:
    # select.epoll.poll raises OverflowError past 2**31 - 1 ms (about 24.8 days): before,
    # EchoServer-style values like 30 days were accepted and killed the loop at the first timer.
    with pytest.raises(FaultParameterError, match=f"{name} must be .*24.8 days"):
        cls(**{**cls.quick, name: value})


def test_sums_of_timer_parameters_are_bounded_too() -> None:
    with pytest.raises(FaultParameterError, match="ms \\+ jitter"):
        Latency(ms=EPOLL_MAX_MS, jitter=1)


def test_constructor_shapes_users_have_still_work() -> None:
    assert PartialSend(max_chunk=1).max_chunk == 1
    assert Slicer(average_size=3).average_size == 3
    assert Latency(ms=50, jitter=5).params() == {"probability": 1.0, "ms": 50, "jitter": 5}
    assert ClientReset("after").at == "after"
    with pytest.raises(dataclasses.FrozenInstanceError):
        Slicer(average_size=3).average_size = 4  # type: ignore[misc]


def test_reset_is_gone_and_each_reset_says_who_resets() -> None:
    from pytest_multiconn import faults

    with pytest.raises(AttributeError, match="Reset"):
        faults.Reset  # noqa: B018 - the attribute access is the test
    names = {ClientReset.summary(), TOXICS["limit_data"].summary(),
             TOXICS["reset_peer"].summary()}
    assert len(names) == 3  # three different first lines: who resets, and when


def test_registries_hold_every_fault_once_under_snake_case_names() -> None:
    assert list(CLIENT_FAULTS) == [
        "partial_send", "slow_reader", "never_read", "never_close", "silent", "half_close",
        "reset", "garbage", "burst", "connect_close",
    ]
    assert list(TOXICS) == [
        "latency", "bandwidth", "slicer", "limit_data", "timeout", "reset_peer", "slow_close",
        "corrupt", "substitute", "coalesce", "truncate",
    ]
    for registry in REGISTRIES:
        for name, cls in registry.items():
            assert cls.name == name
            assert cls.family == registry.family
            assert cls.summary()  # documented
        assert [f.name for f in registry.catalogue()] == list(registry)


def test_registry_refuses_a_taken_name_and_explains_unknown_ones() -> None:
    @dataclass(frozen=True, repr=False)
    class Other(ClientFault):
        name = "garbage"

    with pytest.raises(ValueError, match="'garbage' is taken by Garbage"):
        CLIENT_FAULTS.register(Other)
    with pytest.raises(FaultParameterError, match="unknown fault 'lag'; known toxic faults"):
        TOXICS.lookup("lag")
    with pytest.raises(FaultParameterError, match="latency takes ms, jitter, probability"):
        TOXICS.create("latency", seconds=1)
    assert TOXICS.create("Limit-Data", bytes=3) == TOXICS["limit_data"](bytes=3)


def test_replace_checks_like_a_new_fault_and_keeps_the_original() -> None:
    fault = Latency(ms=10)
    assert fault.replace(jitter=2) == Latency(ms=10, jitter=2)
    assert fault == Latency(ms=10)
    with pytest.raises(FaultParameterError, match=r"ms must be .* got inf"):
        fault.replace(ms=math.inf)
    with pytest.raises(FaultParameterError, match="no parameter bogus; its parameters are: ms"):
        fault.replace(bogus=1)
    chunked = Slicer(average_size=3).replace(probability=0.5)
    assert isinstance(chunked, Slicer)
    assert chunked.probability == 0.5


def test_cli_refuses_an_infinite_latency_with_one_line_exit_2(capsys) -> None:
    # Before: accepted, and the first connection killed the proxy's loop thread.
    from pytest_multiconn.cli import main

    assert main(["proxy", "127.0.0.1", "0", "127.0.0.1", "9", "--fault", "latency:ms=inf"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith("multiconn: error: Latency: ms must be a finite number")
    assert "got inf" in err
    assert "--fault 'latency:ms=inf'" in err


# -- seeding labels ---------------------------------------------------------------------------


def test_every_family_derives_its_rng_the_same_way() -> None:
    for fault in (PartialSend(3), Slicer(average_size=3), Latency(ms=1)):
        got = fault.rng(42, 7, 0).random()
        assert got == fault_rng(42, fault.family, 7, 0, fault.name).random()
    draws = {f.rng(42, 7, 0).random()
             for f in (PartialSend(3), Slicer(average_size=3), Latency(ms=1))}
    assert len(draws) == 3  # families and names separate the streams


def test_probability_draws_are_seeded_per_connection() -> None:
    fault = HalfClose(probability=0.5)
    picks = [fault.applies(9, conn, 0) for conn in range(200)]
    assert picks == [fault.applies(9, conn, 0) for conn in range(200)]
    assert 60 < sum(picks) < 140
    assert all(HalfClose(probability=1).applies(9, c, 0) for c in range(20))
    assert not any(HalfClose(probability=0).applies(9, c, 0) for c in range(20))


# -- custom faults, one per family, on public types only -------------------------------------


class _TwoByteSession(FaultSession):
    fault: TwoByteSends

    def __init__(self, fault: ClientFault, conn: ClientConnectionAPI, rng: random.Random):
        super().__init__(fault, conn, rng)
        self.first_draw = rng.random()
        seen_client.append(self.first_draw)

    def connected(self) -> None:
        self.conn.max_send = self.fault.size
        self.conn.fault_note(f"sending {self.fault.size} B at a time")

    def after_send(self, sent: int) -> None:
        self.conn.max_send = self.fault.size


seen_client: list[float] = []


@dataclass(frozen=True, repr=False)
class TwoByteSends(ClientFault):
    """Sends ``size`` bytes per send() call."""

    name = "two_byte_sends"
    session_class = _TwoByteSession
    size: int = param(2, integer(1))


def test_a_custom_client_fault_runs_on_real_sockets(multiconn_server: EchoServer) -> None:
    seen_client.clear()
    client = MultiConnClient(multiconn_server.address, 2, messages=[b"x" * 40],
                             faults=[TwoByteSends()], seed=77, timeout=10)
    results = client.run()
    assert results.ok
    for result in results:
        assert result.faults == "two_byte_sends"
        assert result.send_sizes
        assert max(result.send_sizes) <= 2
        assert "sending 2 B at a time" in result.note
    # Connections are numbered from 1; the fault is at position 0 of the list.
    expected = sorted(fault_rng(77, "client", c, 0, "two_byte_sends").random() for c in (1, 2))
    assert sorted(seen_client) == expected


seen_server: list[float] = []


class _CapStage(Stage):
    toxic: CapSends

    def start(self) -> None:
        seen_server.append(self.rng.random())
        self.pipe.note(self, "capping sends")

    def feed(self, data: bytes) -> None:
        cap = self.toxic.cap
        for i in range(0, len(data), cap):
            self.next.feed(data[i : i + cap])  # each piece leaves in a send() of its own


@dataclass(frozen=True, repr=False)
class CapSends(Toxic):
    """Send at most ``cap`` bytes per send()."""

    name = "cap_sends"
    stage_class = _CapStage
    cap: int = param(check=integer(1))
    _: KW_ONLY
    pause: float = param(0.0, seconds())


def _sends(transcript: str) -> list[tuple[int, int]]:
    """(bytes, send() calls) of each ``out`` line of a connection's transcript."""
    return [(int(size), int(ops or 1))
            for size, ops in re.findall(r"\bout\s+(\d+) B(?: in (\d+) ops)?", transcript)]


def test_a_custom_fault_runs_on_a_server_on_real_sockets() -> None:
    seen_server.clear()
    with EchoServer(faults=[CapSends(4)], seed=5) as server, \
            socket.create_connection(server.address, timeout=10) as sock:
        sock.sendall(b"y" * 50)
        assert recv_exactly(sock, 50) == b"y" * 50
        sock.close()
        server.wait_for_closed(1)
        [info] = server.recently_closed()
    sends = _sends(info.transcript)
    assert sum(size for size, _ in sends) == 50
    assert sum(ops for _, ops in sends) == 13  # 12 sends of 4 B and one of 2
    assert "cap_sends_downstream[down]: capping sends" in info.transcript
    # The server labels a stage's rng as the proxy does: seed, connection, direction, name.
    assert seen_server == [fault_rng(5, "toxic", 1, "downstream", "cap_sends_downstream")
                           .random()]
    with pytest.raises(FaultParameterError, match="CapSends: cap must be an integer >= 1"):
        CapSends(0)


seen_toxic: list[float] = []


class _UpperStage(Stage):
    def start(self) -> None:
        seen_toxic.append(self.rng.random())

    def feed(self, data: bytes) -> None:
        self.pipe.note(self, "upper-cased", len(data))
        self.next.feed(data.upper())


@dataclass(frozen=True, repr=False)
class Upper(Toxic):
    """Upper-case every byte."""

    name = "upper"
    stage_class = _UpperStage


def test_a_custom_toxic_runs_in_a_real_proxy(multiconn_server: EchoServer, multiconn_proxy_factory):
    seen_toxic.clear()
    proxy = multiconn_proxy_factory(multiconn_server, seed=3)
    name = proxy.add(Upper(), direction="downstream")
    assert name == "upper_downstream"
    with socket.create_connection(proxy.address, timeout=10) as sock:
        sock.sendall(b"hello")
        got = b""
        while len(got) < 5:
            chunk = sock.recv(100)
            assert chunk, "EOF before the echo"
            got += chunk
    assert got == b"HELLO"
    # The proxy labels a stage's rng with the entry's name (two of one kind may be added).
    assert seen_toxic == [fault_rng(3, "toxic", 1, "downstream", name).random()]


def test_server_fault_probability_picks_connections_by_seeded_draw() -> None:
    with EchoServer(faults=[Slicer(average_size=2, probability=0.5)], seed=11) as server:
        for _ in range(8):
            with socket.create_connection(server.address, timeout=10) as sock:
                sock.sendall(b"abcd")
                assert recv_exactly(sock, 4) == b"abcd"
        server.wait_for_closed(8)
        closed = sorted(server.recently_closed(), key=lambda info: info.id)  # accept order
    sliced = {n for n, info in enumerate(closed, 1) if "sliced into 2" in info.transcript}
    skipped = {n for n, info in enumerate(closed, 1) if "not applied (p=0.5)" in info.transcript}
    expected = {n for n in range(1, 9)
                if fault_rng(11, "toxic", n, "downstream", "slicer_downstream").random() < 0.5}
    assert sliced == expected
    assert skipped == set(range(1, 9)) - expected
    assert 0 < len(expected) < 8  # the seed was picked so that both cases occur


def test_client_fault_probability_picks_connections_by_seeded_draw(
    multiconn_server: EchoServer,
) -> None:
    fault = PartialSend(3, probability=0.5)
    results = MultiConnClient(multiconn_server.address, 10, faults=[fault], seed=4,
                              timeout=10).run()
    assert results.ok
    faulty = {r.conn_id for r in results if r.faults == "partial_send"}
    assert faulty == {c for c in range(1, 11) if fault.applies(4, c, 0)}
    assert 0 < len(faulty) < 10
