"""FaultProxy as a relay (no faults) and in step mode, over real loopback sockets."""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import os
import random
import select
import socket
import threading

import pytest

from helpers import WAIT, abort, connect, raw_target, recv_exactly, recv_until_eof
from pytest_multiconn import EchoServer, FaultProxy, MultiConnClient, RemoteBindError, WaitTimeout
from pytest_multiconn.faults import closed_port_address
from pytest_multiconn.lowlevel import wait_until
from pytest_multiconn.proxy import Latency, LimitData, Slicer


def test_echo_through_proxy_many_connections(multiconn_server: EchoServer, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    messages = [b"x" * 1000, b"hello", bytes(range(256)) * 40]
    MultiConnClient(proxy.address, 50, messages, timeout=WAIT).run().check()
    proxy.wait_for_closed(50)
    stats = proxy.stats()
    assert stats.accepted == 50
    total = 50 * sum(map(len, messages))
    assert stats.bytes_in == total
    assert stats.bytes_out == total


def test_thousands_of_connections(multiconn_server: EchoServer, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    MultiConnClient(proxy.address, 2000, [b"ping"], timeout=30).run().check()
    proxy.wait_for_closed(2000, timeout=30)
    multiconn_server.wait_for_closed(2000, timeout=30)
    assert multiconn_server.stats().accepted == 2000


def test_ipv6_and_unix_socket_targets(multiconn_server_factory, multiconn_proxy_factory, tmp_path):
    try:
        v6 = multiconn_server_factory(host="::1")
    except OSError as exc:  # pragma: no cover - hosts without IPv6 loopback
        pytest.skip(f"no IPv6 loopback: {exc}")
    unix = multiconn_server_factory(unix_path=str(tmp_path / "echo.sock"))
    for target in (v6, unix):
        proxy = multiconn_proxy_factory(target.address)
        MultiConnClient(proxy.address, 3, timeout=WAIT).run().check()
    unix_proxy = multiconn_proxy_factory(v6, listen=str(tmp_path / "proxy.sock"))
    MultiConnClient(unix_proxy.address, 3, timeout=WAIT).run().check()


def test_half_close_is_forwarded_after_the_data(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        with connect(proxy.address) as client:
            client.sendall(b"request")
            client.shutdown(socket.SHUT_WR)
            server = target.accept()
            # The server sees the data, then end-of-stream, while its own side stays open.
            assert recv_until_eof(server) == b"request"
            server.sendall(b"reply after your EOF")
            assert recv_exactly(client, 20) == b"reply after your EOF"
            server.shutdown(socket.SHUT_WR)
            assert client.recv(10) == b""
        proxy.wait_for_idle()
        assert "eof-to-server" in proxy.recently_closed()[-1].transcript


def test_rst_from_client_becomes_rst_to_server(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        client = connect(proxy.address)
        server = target.accept()
        client.sendall(b"x")
        assert recv_exactly(server, 1) == b"x"
        abort(client)
        with pytest.raises(ConnectionResetError):
            recv_until_eof(server)


def test_rst_from_server_becomes_rst_to_client(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        with connect(proxy.address) as client:
            server = target.accept()
            server.sendall(b"y")
            assert recv_exactly(client, 1) == b"y"
            abort(server)
            target.accepted.remove(server)
            with pytest.raises(ConnectionResetError):
                recv_until_eof(client)
            handle = proxy.handles()
            assert handle == []  # both sides gone
        assert "forwarding RST" in proxy.recently_closed()[-1].transcript


def test_refused_target_resets_the_client(multiconn_proxy_factory):
    with closed_port_address() as address:
        proxy = multiconn_proxy_factory(address)
        # The proxy's RST may arrive before connect() returns, or at the first recv().
        with pytest.raises(ConnectionResetError), connect(proxy.address) as client:
            client.recv(10)


def _fill_until_blocked(sock: socket.socket, limit: int) -> int:
    """Send without blocking until the kernel refuses more; return bytes sent."""
    sock.setblocking(False)
    chunk = b"z" * 65536
    sent = 0
    idle_rounds = 0
    while sent < limit:
        try:
            sent += sock.send(chunk)
            idle_rounds = 0
        except BlockingIOError:
            # Give the proxy a chance to read more; if the socket stays unwritable, the
            # whole path (client -> proxy -> server) is full: that is backpressure.
            _, writable, _ = select.select([], [sock], [], 0.2)
            if not writable:
                idle_rounds += 1
                if idle_rounds >= 3:
                    return sent
    return sent


@pytest.mark.parametrize("slow", ["server", "client"])
def test_backpressure_bounds_the_proxy_buffer(multiconn_proxy_factory, slow):
    limit = 256 * 1024 * 1024
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address, high_water=64 * 1024)
        with connect(proxy.address) as client:
            server = target.accept()
            writer, reader = (client, server) if slow == "server" else (server, client)
            sent = _fill_until_blocked(writer, limit)
            assert sent < limit, "the proxy read everything: no backpressure"
            stats = proxy.stats()
            # Bounded by the high-water mark plus one read, not by what the writer offered.
            assert stats.peak_buffered <= 64 * 1024 + 65536 * 2
            (handle,) = proxy.handles()
            moved = handle.stats()
            assert moved["upstream" if slow == "server" else "downstream"] < sent
            # Draining the reader lets everything through, byte for byte.
            writer.setblocking(True)
            writer.shutdown(socket.SHUT_WR)
            assert len(recv_until_eof(reader, limit=limit)) == sent


def test_non_loopback_target_is_refused():
    with pytest.raises(RemoteBindError, match="allow_remote"):
        FaultProxy(("192.0.2.1", 80))
    with pytest.raises(ValueError, match="target must be"):
        FaultProxy(12345)
    with pytest.raises(ValueError, match="port 0"):
        FaultProxy(("127.0.0.1", 0))


def test_context_manager_and_repr(multiconn_server):
    with FaultProxy(multiconn_server, seed=7) as proxy:
        assert proxy.seed == 7
        proxy.add(Latency(ms=1))
        assert "latency_downstream" in repr(proxy)
        MultiConnClient(proxy.address, 2, timeout=WAIT).run().check()
    assert "stopped" in repr(proxy)


# -- step mode ---------------------------------------------------------------------------------
def test_step_mode_delivers_one_byte_at_a_time_exactly(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address, hold=True)
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            client.sendall(b"hello")
            assert handle.wait_pending(5, "upstream") == 5
            for expected in b"hello":
                handle.release(1, "upstream")
                # Exactly one byte is readable: recv(100) returns it alone, and nothing more
                # is waiting behind it.
                assert server.recv(100) == bytes([expected])
                assert select.select([server], [], [], 0.02)[0] == []
            assert handle.pending("upstream") == 0
            server.sendall(b"world!")
            handle.release(2, "downstream")
            assert client.recv(100) == b"wo"
            handle.release(4, "downstream")
            assert recv_exactly(client, 4) == b"rld!"
            server.sendall(b"tail")
            handle.wait_pending(4)
            assert handle.release_eof("downstream") == 4  # held bytes are dropped
            assert client.recv(100) == b""
        assert "step: released upstream" in handle.transcript


def test_step_mode_holds_eof_until_released(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        proxy.hold()
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            client.sendall(b"ab")
            client.shutdown(socket.SHUT_WR)
            handle.wait_pending(2, "upstream")
            handle.wait_eof_pending("upstream")
            assert handle.eof_pending("upstream")
            handle.release(2, "upstream")
            assert recv_exactly(server, 2) == b"ab"
            assert select.select([server], [], [], 0.05)[0] == []  # EOF still held
            handle.unhold("upstream")
            assert server.recv(10) == b""


def test_step_mode_errors_are_clear(multiconn_proxy_factory, multiconn_server):
    proxy = multiconn_proxy_factory(multiconn_server)
    with connect(proxy.address):
        handle = proxy.wait_for_connection()
        with pytest.raises(RuntimeError, match="not held"):
            handle.release(1)
        handle.hold()
        with pytest.raises(WaitTimeout, match="1 bytes held downstream"):
            handle.release(1, timeout=0.1)
        with pytest.raises(ValueError, match="direction"):
            handle.pending("sideways")  # type: ignore[arg-type]
    with pytest.raises(WaitTimeout, match="a connection"):
        proxy.wait_for_connection(timeout=0.1)


def test_handle_reset_and_close(multiconn_proxy_factory):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            handle.reset()
            with pytest.raises(ConnectionResetError):
                client.recv(10)
            with pytest.raises(ConnectionResetError):
                server.recv(10)
            handle.wait_closed()
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            handle.close()
            assert client.recv(10) == b""
            assert server.recv(10) == b""
            assert handle.closed


def test_proxy_is_thread_safe_under_concurrent_changes(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            for i in range(50):
                name = proxy.add(Latency(ms=0.5), direction="both", name=f"l{i}")
                proxy.update(name, ms=0.2)
                proxy.remove(name)
        except BaseException as exc:  # noqa: BLE001 - reported by the assert below
            errors.append(exc)

    thread = threading.Thread(target=churn)
    thread.start()
    MultiConnClient(proxy.address, 20, [b"a" * 5000] * 5, timeout=WAIT).run().check()
    thread.join(WAIT)
    assert not thread.is_alive()
    assert errors == []
    assert proxy.faults() == []


def test_errno_on_reset_is_econnreset(multiconn_proxy_factory, multiconn_server):
    proxy = multiconn_proxy_factory(multiconn_server)
    with connect(proxy.address) as client:
        proxy.wait_for_connection().reset()
        with pytest.raises(OSError, match="reset") as info:
            client.recv(1)
        assert info.value.errno == errno.ECONNRESET


# -- the zero-copy (splice) relay ---------------------------------------------------------------
needs_splice = pytest.mark.skipif(not hasattr(os, "splice"), reason="os.splice is Linux-only")
MiB = 1024 * 1024


def _stream_data(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


class _Reader(threading.Thread):
    """Reads ``sock`` until EOF (or ``limit`` bytes) in the background, keeping every byte."""

    def __init__(self, sock: socket.socket, limit: int = 256 * MiB,
                 pause_at: int | None = None) -> None:
        super().__init__(daemon=True)
        self.sock, self.limit, self.pause_at = sock, limit, pause_at
        self.data = bytearray()
        self.error: BaseException | None = None
        self.go = threading.Event()
        self.go.set()
        self.paused = threading.Event()

    def run(self) -> None:
        try:
            while len(self.data) < self.limit:
                if self.pause_at is not None and len(self.data) >= self.pause_at:
                    self.pause_at = None
                    self.go.clear()
                    self.paused.set()
                if not self.go.wait(WAIT):
                    raise AssertionError("reader was never told to go on")
                chunk = self.sock.recv(min(256 * 1024, self.limit - len(self.data)))
                if not chunk:
                    return
                self.data += chunk
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self.error = exc

    def result(self) -> bytes:
        self.join(30)
        assert not self.is_alive(), f"reader of {self.sock!r} did not finish"
        if self.error is not None:
            raise self.error
        return bytes(self.data)


class _Sender(threading.Thread):
    def __init__(self, sock: socket.socket, data: bytes, eof: bool = True) -> None:
        super().__init__(daemon=True)
        self.sock, self.payload, self.eof = sock, data, eof
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.sock.sendall(self.payload)
            if self.eof:
                self.sock.shutdown(socket.SHUT_WR)
        except BaseException as exc:  # noqa: BLE001 - re-raised by done()
            self.error = exc

    def done(self) -> None:
        self.join(30)
        assert not self.is_alive(), f"sender on {self.sock!r} did not finish"
        if self.error is not None:
            raise self.error


def _spliced(proxy: FaultProxy, handle) -> dict[str, int]:
    return dict(proxy.loop.run_sync(handle._pair.spliced))


def _wait_spliced(proxy: FaultProxy, handle, direction: str, more_than: int = 0) -> None:
    pair = handle._pair
    # Nothing the loop signals: poll, bounded (the proxy's own waits are for signalled state).
    wait_until(lambda: pair.spliced()[direction] > more_than, WAIT,
               f"{direction} of {handle!r} to be spliced")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@needs_splice
@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_splice_streams_32_mib_each_way_byte_exact(multiconn_proxy_factory, tmp_path, family):
    up, down = _stream_data(1, 32 * MiB), _stream_data(2, 32 * MiB)
    with contextlib.ExitStack() as stack:
        if family == "unix":
            listener = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
            listener.bind(str(tmp_path / "target.sock"))
            listener.listen(4)
            listener.settimeout(WAIT)
            proxy = multiconn_proxy_factory(str(tmp_path / "target.sock"), transcript_limit=100_000)
        else:
            target = stack.enter_context(raw_target())
            proxy = multiconn_proxy_factory(target.address, transcript_limit=100_000)
        client = stack.enter_context(connect(proxy.address))
        handle = proxy.wait_for_connection()
        if family == "unix":
            server, _ = listener.accept()
            stack.enter_context(server)
            server.settimeout(WAIT)
        else:
            server = target.accept()
        readers = [_Reader(server), _Reader(client)]
        senders = [_Sender(client, up), _Sender(server, down)]
        for thread in (*readers, *senders):
            thread.start()
        for sender in senders:
            sender.done()
        got_up, got_down = (r.result() for r in readers)
        assert (len(got_up), _sha(got_up)) == (len(up), _sha(up))
        assert (len(got_down), _sha(got_down)) == (len(down), _sha(down))
        handle.wait_closed()
    moved = handle._pair.spliced()
    # Most of each stream went through the kernel pipe, not through Python.
    assert moved["upstream"] > 16 * MiB, moved
    assert moved["downstream"] > 16 * MiB, moved
    stats = handle.stats()
    assert stats == {"upstream": len(up), "downstream": len(down),
                     "to_server": len(up), "to_client": len(down)}
    assert proxy.stats().bytes_in == len(up)
    assert proxy.stats().bytes_out == len(down)
    # Splice amounts are recorded as the usual entries, every byte of them, and end-of-stream
    # follows the data both ways.
    entries = handle.entries()
    assert entries[0].direction == "client-connect"  # nothing was dropped
    totals = collections.Counter()
    for e in entries:
        totals[e.direction] += e.size
    assert totals["from-client"] == totals["to-server"] == len(up)
    assert totals["from-server"] == totals["to-client"] == len(down)
    order = [e.direction for e in entries]
    assert max(i for i, d in enumerate(order) if d == "to-server") < order.index("eof-to-server")
    assert max(i for i, d in enumerate(order) if d == "to-client") < order.index("eof-to-client")


@needs_splice
def test_splice_half_close_after_spliced_data(multiconn_proxy_factory):
    request, reply = _stream_data(3, 4 * MiB), _stream_data(4, 3 * MiB)
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            sender = _Sender(client, request)
            sender.start()
            # The server sees every byte, then end-of-stream, while its own side stays open.
            assert recv_until_eof(server, limit=8 * MiB) == request
            sender.done()
            assert _spliced(proxy, handle)["upstream"] > 0
            reader = _Reader(client)
            reader.start()
            server.sendall(reply)
            server.shutdown(socket.SHUT_WR)
            assert reader.result() == reply
        handle.wait_closed()
    assert handle._pair.spliced()["downstream"] > 0
    entries = [e.direction for e in handle.entries()]
    assert entries.index("eof-to-server") > entries.index("to-server")


@needs_splice
@pytest.mark.parametrize("who", ["client", "server"])
def test_splice_rst_is_forwarded(multiconn_proxy_factory, who):
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            writer, reader = (client, server) if who == "client" else (server, client)
            direction = "upstream" if who == "client" else "downstream"
            data = _stream_data(5, 2 * MiB)
            writer.sendall(data)
            assert recv_exactly(reader, len(data)) == data
            assert _spliced(proxy, handle)[direction] > 0
            abort(writer)
            if who == "server":
                target.accepted.remove(server)
            with pytest.raises(ConnectionResetError):
                recv_until_eof(reader, limit=8 * MiB)
        handle.wait_closed()
        assert "forwarding RST" in handle.transcript


@needs_splice
def test_splice_backpressure_bounds_what_the_proxy_holds(multiconn_proxy_factory):
    high_water = 64 * 1024
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address, high_water=high_water)
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            warmup = _stream_data(6, 2 * MiB)
            client.sendall(warmup)
            assert recv_exactly(server, len(warmup)) == warmup
            assert _spliced(proxy, handle)["upstream"] > 0
            # The server stops reading: the client can only fill the path, not the proxy.
            sent = _fill_until_blocked(client, 256 * MiB)
            assert sent < 256 * MiB, "the proxy read everything: no backpressure"
            pipe_size = proxy.loop.run_sync(lambda: handle._pair.client.splice.size)
            stats = handle.stats()
            held = stats["upstream"] - stats["to_server"]
            assert 0 <= held <= pipe_size + high_water, (held, pipe_size)
            assert proxy.stats().peak_buffered <= high_water + 65536 * 2
            # Draining the server lets everything through, byte for byte.
            client.setblocking(True)
            client.shutdown(socket.SHUT_WR)
            assert recv_until_eof(server, limit=256 * MiB) == b"z" * sent


def _stall_spliced_upstream(proxy: FaultProxy, handle, reader: _Reader) -> None:
    """Wait until the server stopped reading and bytes sit in the upstream kernel pipe."""
    assert reader.paused.wait(WAIT), "the server never read its first bytes"
    pair = handle._pair

    def stalled() -> bool:
        splice = pair.client.splice
        return splice is not None and splice.pending > 0 and pair.client.reading_paused

    wait_until(stalled, WAIT, f"the upstream pipe of {handle!r} to fill")


@needs_splice
def test_splice_switches_to_a_fault_added_mid_stream_in_order(multiconn_proxy_factory):
    data = _stream_data(7, 24 * MiB)
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            reader = _Reader(server, pause_at=4 * MiB)
            reader.start()
            sender = _Sender(client, data)
            sender.start()
            _stall_spliced_upstream(proxy, handle, reader)
            # The fault arrives while the kernel pipe is full: its bytes go out first.
            name = proxy.add(Slicer(average_size=3000, size_variation=1000), "upstream")
            assert _spliced_now(proxy, handle) is False
            reader.go.set()
            _wait_for_transcript(proxy, handle, "slicer_upstream[up]: sliced")
            proxy.remove(name)  # back to the fast path; bulk reads splice again
            sender.done()
            got = reader.result()
            assert (len(got), _sha(got)) == (len(data), _sha(data))
            server.shutdown(socket.SHUT_WR)
            assert client.recv(10) == b""
        handle.wait_closed()
    assert handle.stats()["to_server"] == len(data)


@needs_splice
def test_splice_then_limit_data_added_live_keeps_order_and_counts(multiconn_proxy_factory):
    data = _stream_data(8, 64 * MiB)
    limit = 100_000
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            reader = _Reader(server, pause_at=4 * MiB)
            reader.start()
            sender = _Sender(client, data)
            sender.start()
            _stall_spliced_upstream(proxy, handle, reader)

            def add_and_count() -> int:
                proxy.add(LimitData(bytes=limit), "upstream")
                return int(handle._pair.client.bytes_in)

            read_before = proxy.loop.run_sync(add_and_count)
            reader.go.set()
            got = reader.result()  # the proxy closes after the limit: EOF
            # Every byte read before the fault (the kernel pipe's included) was delivered, then
            # exactly `limit` more, all in order.
            assert len(got) == read_before + limit
            assert got == data[: len(got)]
            sender.join(30)  # the client's sendall ends with a reset or broken pipe
            assert not sender.is_alive()
        handle.wait_closed()


@needs_splice
def test_splice_hold_delivers_the_pipe_then_holds(multiconn_proxy_factory):
    data = _stream_data(9, 48 * MiB)
    with raw_target() as target:
        proxy = multiconn_proxy_factory(target.address)
        with connect(proxy.address) as client:
            handle = proxy.wait_for_connection()
            server = target.accept()
            reader = _Reader(server, limit=len(data), pause_at=2 * MiB)
            reader.start()
            sender = _Sender(client, data, eof=False)
            sender.start()
            _stall_spliced_upstream(proxy, handle, reader)
            delivered = proxy.loop.run_sync(
                lambda: (handle.hold("upstream"), handle._pair.client.bytes_in)[1])
            reader.go.set()
            held = handle.wait_pending(1, "upstream")
            assert held > 0
            assert 0 < delivered < len(data)
            handle.unhold("upstream")
            sender.done()
            got = reader.result()
            assert (len(got), _sha(got)) == (len(data), _sha(data))


def _spliced_now(proxy: FaultProxy, handle) -> bool:
    return bool(proxy.loop.run_sync(lambda: handle._pair.client.splice is not None))


def _wait_for_transcript(proxy: FaultProxy, handle, text: str) -> None:
    pair = handle._pair
    wait_until(lambda: text in pair.transcript.format(), WAIT, f"{text!r} in the transcript")


@needs_splice
def test_splice_leaks_no_descriptors(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    MultiConnClient(proxy.address, 2, [b"w" * MiB], timeout=WAIT).run().check()
    proxy.wait_for_closed(2)
    multiconn_server.wait_for_closed(2)
    before = len(os.listdir("/proc/self/fd"))
    # Bulk both ways (the echo server sends it back), so every pair opens two pipes.
    MultiConnClient(proxy.address, 40, [b"x" * MiB, b"y" * (512 * 1024)],
                    timeout=30).run().check()
    proxy.wait_for_closed(42, timeout=30)
    multiconn_server.wait_for_closed(42, timeout=30)
    assert proxy.handles() == []
    assert proxy._relay.spliced_bytes > 40 * MiB  # the pipes were really used
    after = len(os.listdir("/proc/self/fd"))
    assert after == before, f"{after - before} descriptors leaked"


@needs_splice
def test_splice_off_gives_the_same_bytes(multiconn_server, multiconn_proxy_factory):
    proxy = multiconn_proxy_factory(multiconn_server)
    proxy._relay.splice = False
    MultiConnClient(proxy.address, 3, [b"q" * MiB], timeout=WAIT).run().check()
    proxy.wait_for_closed(3)
    assert proxy._relay.spliced_bytes == 0


@needs_splice
def test_splice_unsupported_falls_back_to_user_space(multiconn_server, multiconn_proxy_factory,
                                                     monkeypatch):
    import pytest_multiconn.proxy.splice as proxy_module

    def no_splice(*args: object, **kwargs: object) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(proxy_module, "SPLICE", no_splice)
    proxy = multiconn_proxy_factory(multiconn_server)
    MultiConnClient(proxy.address, 3, [b"u" * MiB, b"v" * MiB], timeout=WAIT).run().check()
    proxy.wait_for_closed(3)
    assert proxy._relay.splice is False
    assert proxy.stats().bytes_in == 3 * 2 * MiB
