"""Each proxy fault, shown on the wire over loopback: timings (with tolerances), byte
counts, RSTs seen as ECONNRESET, and EOFs."""

from __future__ import annotations

import random
import select
import socket
import sys
import time

import pytest

from helpers import WAIT, connect, raw_target, recv_exactly, recv_until_eof
from pytest_multiconn.faults.toxics import Stage
from pytest_multiconn.lowlevel import wait_until
from pytest_multiconn.proxy import (
    Bandwidth,
    Latency,
    LimitData,
    ResetPeer,
    Slicer,
    SlowClose,
    Timeout,
)

# Generous upper bounds: a loaded 2-core CI machine may be slow, never early.
# Timers never fire early, so lower bounds on elapsed time are exact; upper bounds are timing
# luck on a loaded machine (a 64-byte round trip took 1.5 s under load 12), so the tests have
# none, except where "not delayed" is the point: there the delay it is contrasted with is
# long (LONG_MS), and the bound (SLACK) far below it.
LONG_MS = 60_000
SLACK = 20.0


def _rtt(client: socket.socket, payload: bytes = b"p" * 64) -> float:
    start = time.monotonic()
    client.sendall(payload)
    recv_exactly(client, len(payload))
    return time.monotonic() - start


def test_latency_delays_one_direction(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    proxy.add(Latency(ms=80), direction="downstream")
    with connect(proxy.address) as client:
        rtt = _rtt(client)
    assert rtt >= 0.08
    transcript = proxy.recently_closed() or proxy.connections()
    assert "latency_downstream[down]: delayed" in transcript[-1].transcript


def test_latency_both_directions_adds_twice(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    proxy.add(Latency(ms=40), direction="both")
    with connect(proxy.address) as client:
        assert _rtt(client) >= 0.08


def test_latency_jitter_is_bounded_and_seeded(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server, seed=1234)
    proxy.add(Latency(ms=30, jitter=20))
    with connect(proxy.address) as client:
        samples = [_rtt(client) for _ in range(10)]
    assert all(s >= 0.01 for s in samples)
    assert max(samples) - min(samples) > 0.005  # jitter varies the delay


def test_add_update_remove_while_connected(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    with connect(proxy.address) as client:
        _rtt(client)
        name = proxy.add(Latency(ms=100))
        assert _rtt(client) >= 0.1
        # An update applies to the live connection (upward, so a lower bound shows it).
        proxy.update(name, ms=300)
        assert _rtt(client) >= 0.3
        # Bytes held by a fault being removed are passed on at once, not after LONG_MS.
        proxy.update(name, ms=LONG_MS)
        client.sendall(b"q" * 10)
        proxy.remove(name)
        start = time.monotonic()
        client.settimeout(SLACK)
        assert recv_exactly(client, 10) == b"q" * 10
        assert time.monotonic() - start < SLACK
        _rtt(client)
    with pytest.raises(KeyError, match="no fault named"):
        proxy.remove(name)
    proxy.add(Latency(ms=1), name="x")
    with pytest.raises(ValueError, match="has no parameter"):
        proxy.update("x", seconds=1)


def test_bandwidth_limits_the_rate(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    proxy.add(Bandwidth(bytes_per_second=200_000), direction="downstream")
    data = random.Random(1).randbytes(100_000)
    with connect(proxy.address) as client:
        start = time.monotonic()
        client.sendall(data)
        assert recv_exactly(client, len(data)) == data
        elapsed = time.monotonic() - start
    # 100 kB at 200 kB/s: 0.5 s (one 10 ms slice of burst allowed).
    assert elapsed >= 0.45


def test_bandwidth_rate_is_kilobytes_per_second():
    assert Bandwidth(rate=100).bps == 100_000
    with pytest.raises(ValueError, match="exactly one"):
        Bandwidth()
    assert Bandwidth(rate=1).replace(bytes_per_second=5).bps == 5  # type: ignore[attr-defined]


def test_slicer_splits_and_spaces_the_pieces(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.add(Slicer(average_size=10, size_variation=0, delay_us=30_000), direction="upstream")
        with connect(proxy.address) as client:
            server = target.accept()
            client.sendall(bytes(range(100)))
            start = time.monotonic()
            pieces = []
            got = b""
            while len(got) < 100:
                piece = server.recv(1000)
                assert piece, "EOF before the 100 bytes"
                pieces.append(piece)
                got += piece
            elapsed = time.monotonic() - start
    assert got == bytes(range(100))
    # Ten pieces 30 ms apart: the last one comes at least 9 gaps after the first one.
    assert elapsed >= 0.27 - 0.03
    assert len(pieces) >= 5  # the receiver sees the stream in several reads
    assert all(len(p) % 10 == 0 for p in pieces)


class _Collect:
    """A fake pipeline end that records what a stage emits."""

    def __init__(self) -> None:
        self.items: list[bytes | None] = []

    def feed(self, data: bytes) -> None:
        self.items.append(data)

    def feed_eof(self) -> None:
        self.items.append(None)


def _slice_sizes(seed: int) -> list[int]:
    from pytest_multiconn.core.seed import rng_for
    from pytest_multiconn.lowlevel import Loop

    class Pipe:
        def __init__(self) -> None:
            self.loop = Loop()

        def note(self, *args: object) -> None:
            pass

    pipe = Pipe()
    try:
        stage: Stage = Slicer(average_size=8, size_variation=6).make_stage(
            pipe,  # type: ignore[arg-type]
            rng_for("proxy", 1, "upstream", seed=seed),
        )
        sink = _Collect()
        stage.next = sink
        stage.feed(b"x" * 400)
        return [len(p) for p in sink.items if p is not None]
    finally:
        pipe.loop.close()


def test_slicer_sizes_replay_under_one_seed():
    first, again, other = _slice_sizes(5), _slice_sizes(5), _slice_sizes(6)
    assert first == again
    assert first != other
    assert sum(first) == 400
    assert all(2 <= s <= 14 for s in first[:-1])


def test_limit_data_passes_exactly_n_bytes_then_closes(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.add(LimitData(bytes=100), direction="downstream")
        with connect(proxy.address) as client:
            server = target.accept()
            server.sendall(b"d" * 1000)
            assert recv_until_eof(client) == b"d" * 100
            assert server.recv(10) == b""  # the server side is closed too


def test_limit_data_upstream(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.add(LimitData(bytes=5), direction="upstream")
        with connect(proxy.address) as client:
            server = target.accept()
            client.sendall(b"123")
            assert recv_exactly(server, 3) == b"123"
            client.sendall(b"4567")
            assert recv_until_eof(server) == b"45"


def test_timeout_zero_stalls_forever_without_closing(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.add(Timeout(ms=0), direction="upstream")
        with connect(proxy.address) as client:
            server = target.accept()
            client.sendall(b"lost")
            # Nothing arrives and nothing closes while the fault is on...
            assert select.select([server, client], [], [], 0.3)[0] == []
            proxy.remove("timeout_upstream")
            # ...and new bytes flow once it is removed (the stalled ones were dropped).
            client.sendall(b"found")
            assert recv_exactly(server, 5) == b"found"


def test_timeout_zero_passes_the_senders_close_as_toxiproxy_does(multiconn_proxy_factory):
    # toxiproxy's timeout with 0 arms no timer but closes when its input ends.
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.add(Timeout(ms=0), direction="upstream")
        with connect(proxy.address) as client:
            server = target.accept()
            client.sendall(b"lost")
            client.shutdown(socket.SHUT_WR)
            assert server.recv(10) == b""  # the data was dropped, the EOF passed


def test_timeout_hold_eof_stalls_even_after_the_senders_close(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.add(Timeout(ms=0, hold_eof=True), direction="upstream")
        with connect(proxy.address) as client:
            server = target.accept()
            client.sendall(b"lost")
            client.shutdown(socket.SHUT_WR)
            # Nothing arrives, not even the EOF, while the fault is on...
            assert select.select([server], [], [], 0.3)[0] == []
            proxy.remove("timeout_upstream")
            # ...and the held EOF goes on once it is removed.
            assert server.recv(10) == b""


def test_timeout_closes_after_ms(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.add(Timeout(ms=200), direction="downstream")
        with connect(proxy.address) as client:
            start = time.monotonic()
            server = target.accept()
            server.sendall(b"never delivered")
            assert client.recv(100) == b""
            elapsed = time.monotonic() - start
            assert server.recv(10) == b""
    assert elapsed >= 0.19


def test_reset_peer_resets_both_ends_after_timeout(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.add(ResetPeer(timeout_ms=150), direction="downstream")
        with connect(proxy.address) as client:
            start = time.monotonic()
            server = target.accept()
            server.sendall(b"before")
            assert recv_exactly(client, 6) == b"before"
            with pytest.raises(ConnectionResetError):
                recv_until_eof(client)
            elapsed = time.monotonic() - start
            with pytest.raises(ConnectionResetError):
                recv_until_eof(server)
    assert elapsed >= 0.14


def test_slow_close_delays_eof_not_data(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.add(SlowClose(delay_ms=250), direction="downstream")
        with connect(proxy.address) as client:
            server = target.accept()
            start = time.monotonic()
            server.sendall(b"bye")
            server.shutdown(socket.SHUT_WR)
            assert recv_exactly(client, 3) == b"bye"
            assert client.recv(10) == b""
            eof_at = time.monotonic() - start
    assert eof_at >= 0.24


def test_slow_close_holds_the_eof_but_not_the_data(multiconn_proxy_factory):
    # Contrasted with a LONG_MS hold, so no bound depends on the machine's speed: the data
    # arrives (within SLACK), the EOF does not (it is 60 s away), and removing the toxic
    # lets the EOF through.
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        name = proxy.add(SlowClose(delay_ms=LONG_MS), direction="downstream")
        with connect(proxy.address) as client:
            client.settimeout(SLACK)
            server = target.accept()
            server.sendall(b"bye")
            server.shutdown(socket.SHUT_WR)
            assert recv_exactly(client, 3) == b"bye"
            client.settimeout(0.2)
            with pytest.raises(TimeoutError):
                client.recv(10)
            client.settimeout(SLACK)
            proxy.remove(name)
            assert client.recv(10) == b""


def test_down_refuses_and_cuts_then_up_recovers(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    address = proxy.address
    with connect(address) as client:
        _rtt(client)
        proxy.down()
        assert proxy.is_down
        assert recv_until_eof(client) == b""
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=WAIT).close()
    proxy.up()
    with connect(address) as client:
        _rtt(client)
    proxy.down(reset=True)
    proxy.up()


def test_probability_is_drawn_per_connection_from_the_seed(
    multiconn_server, multiconn_proxy_factory
):
    def affected(seed: int) -> list[int]:
        proxy = multiconn_proxy_factory(multiconn_server, seed=seed)
        proxy.add(Latency(ms=1), probability=0.5)
        numbers = []
        for _ in range(16):
            with connect(proxy.address) as client:
                _rtt(client)
                handle = proxy.wait_for_connection()
                if "not applied" not in handle.transcript:
                    numbers.append(handle.number)
        return numbers

    first = affected(99)
    assert first == affected(99)
    assert 0 < len(first) < 16
    assert first != affected(100)


def test_probability_zero_never_applies(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    proxy.add(Latency(ms=LONG_MS), probability=0.0)
    with connect(proxy.address) as client:
        client.settimeout(SLACK)  # a delayed echo would time out here
        _rtt(client)
        assert "not applied" in proxy.wait_for_connection().transcript


def test_bad_fault_arguments_say_what_to_do(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    with pytest.raises(ValueError, match="probability"):
        proxy.add(Latency(ms=1), probability=2)
    with pytest.raises(ValueError, match="direction"):
        proxy.add(Latency(ms=1), direction="sideways")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Latency"):
        proxy.add("latency")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Latency: ms"):
        Latency(ms=-1)
    with pytest.raises(ValueError, match="size_variation"):
        Slicer(average_size=4, size_variation=4)
    name = proxy.add(Latency(ms=1), name="same")
    with pytest.raises(ValueError, match="already"):
        proxy.add(Latency(ms=1), name=name)


@pytest.mark.skipif(sys.platform != "linux", reason="Linux loopback timing")
def test_faults_show_in_failing_report(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        import socket
        from pytest_multiconn.proxy import LimitData

        def test_it(multiconn_server, multiconn_proxy_factory):
            proxy = multiconn_proxy_factory(multiconn_server)
            proxy.add(LimitData(bytes=3))
            with socket.create_connection(proxy.address, timeout=5) as s:
                s.sendall(b"hello")
                data = b""
                while chunk := s.recv(100):
                    data += chunk
            assert data == b"hello"
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*- multiconn -*",
            "*limit_data_downstream[[]down[]]: limit of 3 B reached: closing*",
        ]
    )


def test_fixture_stops_proxies_and_reports_nothing_on_success(pytester: pytest.Pytester):
    pytester.makepyfile(
        """
        from pytest_multiconn import MultiConnClient

        def test_ok(multiconn_server, multiconn_proxy_factory):
            proxy = multiconn_proxy_factory(multiconn_server)
            MultiConnClient(proxy.address, 3, timeout=5).run().check()
            assert proxy.stats().accepted == 3
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "- multiconn -" not in result.stdout.str()


def test_limit_data_behind_latency_closes_after_the_limit() -> None:
    """The server's EOF reaches LimitData (delayed by Latency) after the limit was hit: the
    connection must still close after exactly the limit, not hang."""
    import socket

    from pytest_multiconn import EchoServer, FaultProxy
    from pytest_multiconn.proxy import Latency, LimitData

    with EchoServer() as server, FaultProxy(server.address, seed=1) as proxy:
        proxy.add(Latency(ms=30), direction="downstream")
        proxy.add(LimitData(bytes=100), direction="downstream")
        with socket.create_connection(proxy.address, timeout=5) as sock:
            sock.sendall(b"x" * 150)
            sock.shutdown(socket.SHUT_WR)
            # the echo server has closed by now: its EOF sits in the Latency queue
            server.wait_for_closed(1)
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply == b"x" * 100


def _wait_read(handle, direction: str, n: int) -> None:
    """Bounded poll: the proxy has read ``n`` bytes in ``direction`` (held by a fault)."""
    wait_until(lambda: handle.stats()[direction] >= n, WAIT,
               f"the proxy to read {n} bytes {direction}")


def test_update_passes_on_what_latency_holds_as_toxiproxy_does(
    multiconn_server, multiconn_proxy_factory
):
    proxy = multiconn_proxy_factory(multiconn_server)
    name = proxy.add(Latency(ms=LONG_MS), direction="downstream")
    with connect(proxy.address) as client:
        handle = proxy.wait_for_connection()
        client.sendall(b"held")
        _wait_read(handle, "downstream", 4)  # the echo is held for LONG_MS
        proxy.update(name, ms=0)
        client.settimeout(SLACK)
        start = time.monotonic()
        assert recv_exactly(client, 4) == b"held"
        client.sendall(b"next")  # not queued behind the old deadline either
        assert recv_exactly(client, 4) == b"next"
        assert time.monotonic() - start < SLACK


def test_reset_peer_drop_the_client_gets_nothing_then_an_rst(
    multiconn_server, multiconn_proxy_factory
):
    proxy = multiconn_proxy_factory(multiconn_server)
    proxy.add(ResetPeer(timeout_ms=100, drop=True), direction="downstream")
    start = time.monotonic()  # before connect: the toxic's clock starts at the proxy's accept
    with connect(proxy.address) as client:
        client.sendall(b"ping")  # echoed by the server, dropped by the proxy
        with pytest.raises(ConnectionResetError):
            recv_until_eof(client)  # no clean EOF; to_client == 0 below: no byte either
        assert time.monotonic() - start >= 0.1
    handle = proxy.wait_for_connection()
    handle.wait_closed()
    assert handle.stats()["to_client"] == 0
    assert "dropped" in handle.transcript


def test_connections_seen_counts_every_accepted_connection(
    multiconn_server, multiconn_proxy_factory
):
    proxy = multiconn_proxy_factory(multiconn_server)
    assert proxy.connections_seen == 0
    for _ in range(3):
        with connect(proxy.address) as sock:
            sock.sendall(b"x")
            assert recv_exactly(sock, 1) == b"x"
    assert proxy.connections_seen == 3
    socks = [connect(proxy.address) for _ in range(2)]  # not yet accepted, maybe
    try:
        assert proxy.connections_seen == 5  # counted once the loop took what was ready
    finally:
        for sock in socks:
            sock.close()
