"""UDP: the datagram echo server, the UDP fault proxy and its faults, measured on the wire.

Every fault test replays a seed: what a fault did is compared with what its ``random.Random``
(``fault_rng(seed, "udp", session, direction, entry name)``) predicts, or with a second run.
Loopback UDP does not lose or reorder datagrams at these rates (a few dozen small datagrams),
so any difference is the fault's doing.  No sleeps: every wait is on a condition, bounded.
"""

from __future__ import annotations

import math
import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_multiconn.core.loop import EVENT_READ, EVENT_WRITE, Loop
from pytest_multiconn.errors import (
    AddressError,
    EchoMismatch,
    FaultParameterError,
    RemoteBindError,
    WaitTimeout,
)
from pytest_multiconn.faults import fault_rng
from pytest_multiconn.proxy import FaultProxy
from pytest_multiconn.udp import (
    UDP_FAULTS,
    Corrupt,
    DatagramEndpoint,
    Delay,
    Drop,
    Duplicate,
    MultiDatagramClient,
    Reorder,
    Truncate,
    UDPEchoServer,
    UDPFaultProxy,
    bind_datagram,
    flip,
    flipped_bits,
    payload,
)
from pytest_multiconn.udp.endpoint import READ_BATCH

SEED = 1234
Proxy = Callable[..., UDPFaultProxy]


def _run(proxy: UDPFaultProxy, datagrams: int, clients: int = 1, size: int = 32) -> Any:
    """One run of ``clients`` fresh sockets through ``proxy``, waiting exactly for what the
    proxy delivers (so dropped datagrams cost no timeout)."""
    return MultiDatagramClient(proxy, clients, datagrams, size=size, timeout=10.0,
                               expect=proxy.wait_echo_settled).run()


def _rng(name: str, direction: str = "upstream", session: int = 1, seed: int = SEED) -> Any:
    return fault_rng(seed, "udp", session, direction, name)


@pytest.fixture
def udp_socket() -> Iterator[Callable[[tuple[str, int]], socket.socket]]:
    """Plain blocking UDP sockets (bounded by a timeout), closed at teardown."""
    made: list[socket.socket] = []

    def make(target: tuple[str, int]) -> socket.socket:
        sock = socket.socket(socket.AF_INET6 if ":" in target[0] else socket.AF_INET,
                             socket.SOCK_DGRAM)
        made.append(sock)
        sock.settimeout(10.0)
        sock.connect(target)
        return sock

    yield make
    for sock in made:
        sock.close()


# -- the echo server ---------------------------------------------------------------------------


def test_echo_server_keeps_datagram_boundaries(
    multiconn_udp_server: UDPEchoServer, udp_socket: Callable[..., socket.socket]
) -> None:
    sock = udp_socket(multiconn_udp_server.address)
    sizes = [0, 1, 100, 1400, 9000]
    for i, size in enumerate(sizes):
        sock.send(bytes([65 + i]) * size)
    echoes = [sock.recv(65536) for _ in sizes]
    assert echoes == [bytes([65 + i]) * size for i, size in enumerate(sizes)]
    stats = multiconn_udp_server.wait_for_echoes(len(sizes))
    assert (stats.datagrams_in, stats.bytes_in) == (len(sizes), sum(sizes))
    assert (stats.datagrams_out, stats.bytes_out) == (len(sizes), sum(sizes))
    assert stats.dropped == 0


def test_multi_client_checks_every_echo(multiconn_udp_server: UDPEchoServer) -> None:
    results = MultiDatagramClient(multiconn_udp_server, 4, 25, size=48).run().check()
    assert len(results) == 4
    assert all(r.ok and r.received == 25 and r.order == tuple(range(25)) for r in results)
    assert len({r.address for r in results}) == 4  # four sockets, four source ports
    assert multiconn_udp_server.wait_for_datagrams(100).datagrams_in == 100


def test_echo_server_on_ipv6_loopback(udp_socket: Callable[..., socket.socket]) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = UDPEchoServer("::1").start()
    except AddressError as exc:
        pytest.skip(f"::1 is not available: {exc}")
    with server:
        assert server.host == "::1"
        sock = udp_socket(server.address)
        sock.send(b"six")
        assert sock.recv(100) == b"six"
        MultiDatagramClient(server, 2, 5).run().check()


@pytest.mark.parametrize("host", ["10.1.2.3", "0.0.0.0", "::"])
def test_remote_addresses_need_allow_remote(host: str) -> None:
    with pytest.raises(RemoteBindError, match="allow_remote=True"):
        UDPEchoServer(host)
    with pytest.raises(RemoteBindError):
        UDPFaultProxy((host, 9))
    with pytest.raises(RemoteBindError):
        MultiDatagramClient((host, 9))


def test_send_queue_is_bounded_and_write_interest_only_while_queued() -> None:
    # A Unix datagram pair whose reader does not read: the kernel refuses sends once the
    # reader's queue is full (loopback UDP would drop at the receiver instead), so sendto
    # really would block and the endpoint must queue, then drop beyond its bound.
    ours, peer = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ours.setblocking(False)
    loop = Loop("multiconn-test-udp-queue")
    endpoint = DatagramEndpoint(loop, ours, lambda data, addr: None, max_queue=4)
    try:
        endpoint.attach()
        sent = 0
        for i in range(5000):
            endpoint.send(b"%05d" % i + b"x" * 500)
            sent += 1
            if endpoint.dropped:
                break
        assert endpoint.dropped == 1, "the kernel never refused a send: nothing was queued"
        assert endpoint.queued == 4
        key = loop._selector.get_key(ours)
        assert key.events & EVENT_WRITE, "EVENT_WRITE must be registered while queued"
        delivered = endpoint.datagrams_out
        # The reader drains its queue; the loop then sends the four queued datagrams.
        peer.setblocking(False)
        got = []
        while len(got) < delivered + 4:
            try:
                got.append(peer.recv(1000))
            except BlockingIOError:
                assert loop.run_until(lambda: not endpoint.queued, 10.0) or got
        assert not endpoint.queued
        assert not loop._selector.get_key(ours).events & EVENT_WRITE
        # In order, and the dropped one (the last send) is the only one missing.
        assert [int(g[:5]) for g in got] == [i for i in range(sent) if i != sent - 1]
    finally:
        loop.close()
        peer.close()


def test_one_readiness_event_reads_a_bounded_batch() -> None:
    # A flooded socket must not starve the others on its loop: one event, READ_BATCH reads.
    loop = Loop("multiconn-test-udp-batch")
    sock = bind_datagram("127.0.0.1")
    got: list[bytes] = []
    endpoint = DatagramEndpoint(loop, sock, lambda data, addr: got.append(data))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        endpoint.attach()
        for i in range(READ_BATCH + 10):
            sender.sendto(b"%d" % i, sock.getsockname())
        endpoint.handle_event(EVENT_READ)
        assert len(got) == READ_BATCH
        endpoint.handle_event(EVENT_READ)
        assert got == [b"%d" % i for i in range(READ_BATCH + 10)]
    finally:
        sender.close()
        loop.close()


def test_waits_are_bounded_and_say_what_they_waited_for(
    multiconn_udp_server: UDPEchoServer,
) -> None:
    with pytest.raises(WaitTimeout, match="3 datagrams received"):
        multiconn_udp_server.wait_for_datagrams(3, timeout=0.05)


def test_a_stopped_target_is_counted_not_fatal(
    multiconn_udp_proxy_factory: Proxy, udp_socket: Callable[..., socket.socket]
) -> None:
    with UDPEchoServer() as gone:
        target = gone.address
    proxy = multiconn_udp_proxy_factory(target)
    sock = udp_socket(proxy.address)
    sock.send(b"anyone there?")
    # The kernel answers with ICMP port unreachable; the session's socket reports it once.
    proxy.wait_for(lambda s: s.upstream_out == 1, what="the datagram to be sent")
    sock.send(b"still there?")
    stats = proxy.wait_for(lambda s: s.errors >= 1, what="the refused datagram to be counted")
    assert stats.downstream_in == 0
    proxy.check()  # nothing was raised in the loop thread


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Drop(probability=2), "probability"),
        (lambda: Drop(probability=math.nan), "probability"),
        (lambda: Duplicate(copies=0), "copies"),
        (lambda: Duplicate(copies=True), "copies"),
        (lambda: Truncate(bytes=-1), "bytes"),
        (lambda: Truncate(bytes=2.5), "bytes"),
        (Corrupt, "exactly one of"),
        (lambda: Corrupt(flips=1, rate=0.1), "exactly one of"),
        (lambda: Corrupt(rate=math.inf), "rate"),
        (lambda: Delay(ms=math.inf), "ms"),
        (lambda: Delay(ms=-1), "ms"),
        (lambda: Reorder(window=1), "window"),
        (lambda: Reorder(ms="5"), "ms"),
    ],
)
def test_fault_parameters_are_checked(make: Callable[[], object], message: str) -> None:
    with pytest.raises(FaultParameterError, match=message):
        make()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_clients": 0}, "num_clients"),
        ({"datagrams": True}, "datagrams"),
        ({"size": 8}, "size"),
        ({"timeout": math.nan}, "timeout"),
    ],
)
def test_client_parameters_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(FaultParameterError, match=message):
        MultiDatagramClient(("127.0.0.1", 9), **kwargs)


def test_proxy_parameters_are_checked() -> None:
    # The proxy's own parameters go through core/checks.py, as FaultProxy's do: a ValueError
    # naming the parameter and the value (FaultParameterError is for a fault's parameters).
    for bad in (-1, 0, math.inf, math.nan, True, "1"):
        with pytest.raises(ValueError, match=rf"^idle_timeout must be .*got {bad!r}"):
            UDPFaultProxy(("127.0.0.1", 9), idle_timeout=bad)
    for count in (0, 65537, 1.5, True):
        with pytest.raises(ValueError, match=rf"^max_sessions must be .*got {count!r}"):
            UDPFaultProxy(("127.0.0.1", 9), max_sessions=count)
    with pytest.raises(ValueError, match=r"^transcript_limit must be .*got -1"):
        UDPFaultProxy(("127.0.0.1", 9), transcript_limit=-1)
    for seed in ("7", -1, 2**64, True, 1.5):
        with pytest.raises(ValueError, match=rf"^seed must be .*got {seed!r}"):
            UDPFaultProxy(("127.0.0.1", 9), seed=seed)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=rf"^seed must be .*got {seed!r}"):
            FaultProxy(("127.0.0.1", 9), seed=seed)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="target"):
        UDPFaultProxy(object())
    proxy = UDPFaultProxy(("127.0.0.1", 9))
    with pytest.raises(TypeError, match="datagram fault"):
        proxy.add("drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="direction"):
        proxy.add(Drop(), "sideways")  # type: ignore[arg-type]


def test_registry_names_every_fault() -> None:
    assert set(UDP_FAULTS) == {"drop", "duplicate", "reorder", "delay", "truncate", "corrupt"}
    assert UDP_FAULTS.create("drop", probability=0.25) == Drop(probability=0.25)
    assert {type(f).name for f in UDP_FAULTS.catalogue()} == set(UDP_FAULTS)
    with pytest.raises(FaultParameterError, match="copies"):
        UDP_FAULTS.create("duplicate", copies=-1)


# -- faults on the wire, replayed from the seed -------------------------------------------


def test_drop_is_the_seeded_schedule_in_every_run(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    n = 40
    rng = _rng("drop_upstream")
    predicted = {i for i in range(n) if rng.random() < 0.5}
    assert 0 < len(predicted) < n
    lost_per_run = []
    for _ in range(2):  # two proxies, same seed: the same datagrams go missing
        proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
        proxy.add(Drop(probability=0.5), "upstream")
        (result,) = _run(proxy, n)
        lost = set(range(n)) - set(result.order)
        assert lost == predicted
        assert result.lost == len(predicted)
        assert not result.duplicated
        assert not result.corrupted
        actions = proxy.session(result.address).actions
        assert [a.index for a in actions] == sorted(predicted)
        assert {a.action for a in actions} == {"dropped"}
        lost_per_run.append(lost)
    assert lost_per_run[0] == lost_per_run[1]


def test_a_different_seed_drops_other_datagrams(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    lost = []
    for seed in (1, 2):
        proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=seed)
        proxy.add(Drop(probability=0.5), "upstream")
        (result,) = _run(proxy, 40)
        lost.append(set(range(40)) - set(result.order))
    assert lost[0] != lost[1]


def test_duplicate_delivers_exact_copies(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
    proxy.add(Duplicate(copies=2), "downstream")
    (result,) = _run(proxy, 12)
    assert result.received == 36
    assert result.duplicated == 24
    assert not result.lost
    assert not result.corrupted
    for seq, sent in enumerate(result.payloads):
        assert result.echoes.count(sent) == 3, seq  # byte-for-byte copies
    stats = proxy.stats()
    assert (stats.downstream_in, stats.downstream_out) == (12, 36)
    assert multiconn_udp_server.stats().datagrams_in == 12  # copied on the way back only


def test_duplicate_with_probability_copies_the_seeded_datagrams(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    rng = _rng("duplicate_upstream")
    predicted = [i for i in range(30) if rng.random() < 0.3]
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
    proxy.add(Duplicate(copies=1, probability=0.3), "upstream")
    (result,) = _run(proxy, 30)
    copied = sorted(i for i, p in enumerate(result.payloads) if result.echoes.count(p) == 2)
    assert copied == predicted
    assert result.duplicated == len(predicted)
    assert not result.lost


def test_reorder_changes_order_not_content(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    window, n = 8, 16
    rng = _rng("reorder_upstream")
    predicted: list[int] = []
    for start in range(0, n, window):  # two full windows, each shuffled once
        chunk = list(range(start, start + window))
        rng.shuffle(chunk)
        predicted.extend(chunk)
    assert predicted != list(range(n))
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
    proxy.add(Reorder(window=window, ms=60_000), "upstream")  # only full windows release
    (result,) = _run(proxy, n)
    assert sorted(result.echoes) == sorted(result.payloads)  # the same datagrams...
    assert list(result.order) == predicted  # ...in the seeded order
    assert result.reordered > 0
    assert not result.lost
    assert not result.corrupted


def test_reorder_releases_a_partial_window_after_its_delay(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
    proxy.add(Reorder(window=100, ms=20), "upstream")
    (result,) = _run(proxy, 5)
    assert sorted(result.order) == list(range(5))
    assert not result.lost
    assert all("reordered (timer)" in a.action for a in proxy.session(result.address).actions)


def test_truncate_cuts_every_datagram(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
    proxy.add(Truncate(bytes=10), "downstream")
    (result,) = _run(proxy, 10, size=40)
    assert [len(e) for e in result.echoes] == [10] * 10
    assert list(result.echoes) == [p[:10] for p in result.payloads]
    assert result.corrupted == 10  # no echo is a datagram that was sent
    assert multiconn_udp_server.stats().bytes_in == 400  # the server got them whole


def test_corrupt_flips_exactly_the_predicted_bits(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    fault = Corrupt(flips=3)
    n, size = 20, 32
    rng = _rng("corrupt_upstream")
    predicted = [flipped_bits(fault, rng, size) for _ in range(n)]
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
    proxy.add(fault, "upstream")
    (result,) = _run(proxy, n, size=size)
    assert result.corrupted == n
    assert result.received == n
    expected = [flip(payload(0, i, size), bits) for i, bits in enumerate(predicted)]
    assert sorted(result.echoes) == sorted(expected)
    for sent, echo in zip(result.payloads, expected, strict=True):
        diff = int.from_bytes(sent, "big") ^ int.from_bytes(echo, "big")
        assert diff.bit_count() == 3
    actions = proxy.session(result.address).actions
    assert [a.action for a in actions] == [
        "corrupted: flipped bit(s) " + ",".join(map(str, bits)) for bits in predicted
    ]


def test_a_sessions_transcript_is_the_one_bounded_type(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    """A session records its faults' actions in the one Transcript type: an entry per
    action (its FaultAction the entry's detail), bounded by transcript_limit, keeping the
    first entry and the most recent ones; the counts and the totals are never dropped."""
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED, transcript_limit=4)
    proxy.add(Drop(probability=1.0), "upstream")
    (result,) = _run(proxy, 10)
    assert result.lost == 10
    session = proxy.session(result.address)
    assert [a.index for a in session.actions] == [0, 7, 8, 9]
    assert {(a.fault, a.direction, a.action) for a in session.actions} == {
        ("drop_upstream", "upstream", "dropped")}
    lines = session.transcript.splitlines()
    assert "datagrams: up in=10 out=0, down in=0 out=0" in lines[0]
    assert "faults: drop_upstream dropped 10" in lines[1]
    assert "... 6 earlier entries dropped ..." in lines[3]
    assert lines[2].split()[1:] == ["up", "#0", "32", "B", "drop_upstream:", "dropped"]
    assert len(lines) == 7


def test_corrupt_at_a_rate_replays(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    runs = []
    for _ in range(2):
        proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
        proxy.add(Corrupt(rate=0.02), "downstream")
        (result,) = _run(proxy, 20, size=64)
        runs.append(sorted(result.echoes))
        assert 0 < result.corrupted <= 20
    assert runs[0] == runs[1]


def test_delay_is_a_lower_bound_on_the_round_trip(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
    proxy.add(Delay(ms=30), "upstream")
    proxy.add(Delay(ms=20, jitter=10), "downstream")
    (result,) = _run(proxy, 8)
    assert sorted(result.order) == list(range(8))
    assert not result.lost
    assert min(result.rtts.values()) >= (30 + 10) / 1e3  # 30 up, at least 20 - 10 down
    assert proxy.stats().pending == 0


def test_faults_added_updated_and_removed_while_running(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy,
    udp_socket: Callable[..., socket.socket],
) -> None:
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
    sock = udp_socket(proxy.address)
    sock.send(b"before any fault")
    assert sock.recv(100) == b"before any fault"
    name = proxy.add(Truncate(bytes=6), "downstream")  # the live session gets it
    sock.send(b"now cut short")
    assert sock.recv(100) == b"now cu"
    proxy.update(name, bytes=3)
    sock.send(b"shorter")
    assert sock.recv(100) == b"sho"
    proxy.remove(name)
    held = proxy.add(Delay(ms=600_000), "upstream")  # held until removed
    sock.send(b"held")
    proxy.wait_for(lambda s: s.pending == 1, what="the datagram held by the delay")
    proxy.remove(held)  # a removed fault passes on what it holds, at once
    assert sock.recv(100) == b"held"
    assert proxy.faults() == []
    assert proxy.stats().sessions_total == 1


def test_idle_sessions_expire(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy,
    udp_socket: Callable[..., socket.socket],
) -> None:
    # Long enough for the echo to come back through the session on a loaded machine (at
    # 0.05 s the session once expired before the reply arrived); the expiry is waited for.
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, idle_timeout=1.0)
    sock = udp_socket(proxy.address)
    sock.send(b"one")
    assert sock.recv(10) == b"one"
    stats = proxy.wait_for(lambda s: s.expired == 1 and s.sessions == 0,
                           what="the idle session to expire")
    assert stats.sessions_total == 1
    assert [s.end_reason for s in proxy.sessions()] == ["idle timeout"]
    assert proxy.open_sockets() == [repr(proxy._endpoint)]  # the session's socket is closed
    sock.send(b"again")  # a new session for the same client
    assert sock.recv(10) == b"again"
    assert proxy.stats().sessions_total == 2


def test_a_full_session_table_evicts_the_least_recently_active(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy,
    udp_socket: Callable[..., socket.socket],
) -> None:
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, idle_timeout=None, max_sessions=2)
    socks = [udp_socket(proxy.address) for _ in range(3)]
    for i in (0, 1, 0, 2):  # client 1 is the least recently active when client 2 arrives
        socks[i].send(b"%d" % i)
        assert socks[i].recv(10) == b"%d" % i
    stats = proxy.stats()
    assert (stats.sessions, stats.sessions_total, stats.evicted) == (2, 3, 1)
    ended = [s for s in proxy.sessions() if s.closed]
    assert [s.client for s in ended] == [socks[1].getsockname()[:2]]
    assert ended[0].end_reason == "evicted: session table full"


def test_sessions_route_replies_to_their_own_clients(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
    results = _run(proxy, 15, clients=4).check()
    assert proxy.stats().sessions_total == 4
    assert {s.client for s in proxy.sessions()} == {r.address for r in results}
    for info in proxy.sessions():
        assert (info.upstream_in, info.downstream_out) == (15, 15)


def test_results_report_loss_and_check_raises(
    multiconn_udp_server: UDPEchoServer, multiconn_udp_proxy_factory: Proxy
) -> None:
    proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=SEED)
    proxy.add(Drop(probability=1.0), "downstream")
    results = _run(proxy, 5, clients=2)
    assert results.total("lost") == 10
    assert results.total("received") == 0
    assert not results.timed_out  # the proxy said nothing would come: no wait
    with pytest.raises(EchoMismatch, match="2 of 2 UDP clients"):
        results.check()


# -- the plugin: report section and leak check -------------------------------------------


def test_failing_test_report_shows_the_udp_transcript(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_multiconn.udp import Drop, MultiDatagramClient

        def test_lossy(multiconn_udp_server, multiconn_udp_proxy_factory):
            proxy = multiconn_udp_proxy_factory(multiconn_udp_server, seed=5)
            proxy.add(Drop(probability=0.5), "upstream")
            MultiDatagramClient(proxy, 1, 10, expect=proxy.wait_echo_settled).run().check()
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(failed=1)
    out = result.stdout.str()
    assert "multiconn" in out
    assert "UDPFaultProxy" in out
    assert "UDPEchoServer" in out
    assert "fault drop_upstream: Drop(probability=0.5) direction=upstream" in out
    assert "drop_upstream: dropped" in out
    assert "seed=5" in out


def test_udp_server_left_running_is_a_leak(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_multiconn.udp import UDPEchoServer

        def test_leaky():
            UDPEchoServer().start()
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    assert "LeakError" in out
    assert "UDPEchoServer" in out
    assert "is still running; started at test_udp_server_left_running_is_a_leak.py:4 in " \
        "test_leaky during" in out
