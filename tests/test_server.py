"""EchoServer over real loopback sockets: echo, flow control, half-close, resets, limits."""

from __future__ import annotations

import contextlib
import errno
import math
import os
import re
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import WAIT, connect, recv_exactly, recv_until_eof
from pytest_multiconn import (
    AddressError,
    AddressInUseError,
    EchoServer,
    LoopThreadError,
    MultiConnClient,
    RemoteBindError,
)
from pytest_multiconn.core.loop import EVENT_READ
from pytest_multiconn.errors import WaitImpossible
from pytest_multiconn.lowlevel import Connection, EchoConnection, wait_until

TIMEOUT = WAIT


@pytest.fixture
def server() -> Iterator[EchoServer]:
    with EchoServer() as srv:
        yield srv


def test_binds_loopback_ephemeral_port_and_echoes(server: EchoServer) -> None:
    assert server.host == "127.0.0.1"
    assert 0 < server.port < 65536
    assert server.address == (server.host, server.port)
    with connect(server.address) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"hello"
    stats = server.wait_for_closed(1)
    assert (stats.accepted, stats.bytes_in, stats.bytes_out) == (1, 5, 5)


def test_large_payloads_echo_byte_exact_on_many_connections(server: EchoServer) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    results = MultiConnClient(server.address, 8, [payload], timeout=TIMEOUT).run()
    results.check()
    assert [r.received for r in results] == [len(payload)] * 8


def test_ipv6_and_unix_socket(tmp_path: os.PathLike[str]) -> None:
    with EchoServer("::1") as v6:
        assert v6.host == "::1"
        MultiConnClient(v6.address, 3).run().check()
    path = os.path.join(os.fspath(tmp_path), "echo.sock")
    with EchoServer(unix_path=path) as unix:
        assert unix.address == path
        MultiConnClient(unix.address, 3).run().check()
        with pytest.raises(AttributeError, match="no port"):
            _ = unix.port
    assert not os.path.exists(path), "the Unix socket path is removed on stop"


def test_write_interest_only_while_output_pending(server: EchoServer) -> None:
    with connect(server.address) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        masks = server.loop.run_sync(
            lambda: [h._mask for h in server.loop.handlers() if isinstance(h, Connection)]
        )
        assert masks == [EVENT_READ], "an idle connection must not ask for EVENT_WRITE"


def test_reader_that_never_reads_pauses_reading_at_high_water() -> None:
    high = 64 * 1024
    total = 16 * 1024 * 1024
    with EchoServer(high_water=high) as server, connect(server.address) as sock:
        # The writer blocks once every buffer on the way is full: ours, the server's receive
        # buffer, the server's output buffer (up to the high-water mark) and its send buffer.
        writer = threading.Thread(
            target=lambda: (sock.sendall(b"z" * total), sock.shutdown(socket.SHUT_WR))
        )
        writer.start()
        try:
            info = wait_until(
                lambda: [c for c in server.connections() if c.reading_paused],
                TIMEOUT,
                "the server to pause reading",
                describe=lambda: str(server.connections()),
            )[0]
            # What the server holds is bounded by the high-water mark plus one read.
            assert info.buffered <= high + Connection.read_size
            assert server.stats().peak_buffered <= high + Connection.read_size
            assert info.bytes_in < total, "the rest waits in kernel buffers, not in our memory"
        finally:
            # Read everything back: reading resumes and nothing is lost.
            echoed = recv_until_eof(sock)
            writer.join(TIMEOUT)
        assert len(echoed) == total
        assert server.stats().peak_buffered <= high + Connection.read_size


def test_half_close_after_partial_send_loses_nothing(server: EchoServer) -> None:
    payload = os.urandom(3 * 1024 * 1024 + 17)
    with connect(server.address) as sock:
        # Send without reading, then half-close: the server must flush every byte it has
        # before it closes (the tutorial's server closes at once and drops them).
        writer = threading.Thread(
            target=lambda: (sock.sendall(payload), sock.shutdown(socket.SHUT_WR))
        )
        writer.start()
        echoed = recv_until_eof(sock)
        writer.join(TIMEOUT)
    assert echoed == payload


def test_reset_mid_stream_closes_only_that_connection(server: EchoServer) -> None:
    with connect(server.address) as good:
        bad = connect(server.address)
        server.wait_for_connections(2)
        bad.sendall(b"partial message")
        server.wait_for_bytes(len(b"partial message"))
        bad.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        bad.close()  # RST, and it has unread echo data
        server.wait_for_closed(1)
        good.sendall(b"still here")
        assert recv_exactly(good, 10) == b"still here"
    stats = server.wait_for_closed(2)
    assert stats.peer_errors == 1
    server.check()  # a peer's reset is not a server error


def test_idle_timeout_closes_silent_clients() -> None:
    with EchoServer(idle_timeout=0.1) as server, connect(server.address) as silent:
        assert silent.recv(1) == b"", "a silent client is closed by the idle timeout"
        stats = server.wait_for_closed(1)
        assert stats.idle_closed == 1
        closed = server.recently_closed()
        assert closed[0].close_reason == "idle timeout"
        assert "idle for 0.1s" in closed[0].transcript


def test_max_connections_holds_extra_clients_in_the_backlog() -> None:
    with EchoServer(max_connections=2) as server:
        socks = [connect(server.address) for _ in range(3)]
        try:
            server.wait_for_accepted(2)
            socks[2].sendall(b"waiting")
            assert server.stats().accepted == 2
            assert server.stats().accept_paused
            socks[0].close()
            server.wait_for_accepted(3)
            assert recv_exactly(socks[2], 7) == b"waiting"
        finally:
            for s in socks:
                s.close()


def test_stop_closes_every_connection_and_joins_the_thread() -> None:
    server = EchoServer().start()
    clients = [connect(server.address) for _ in range(100)]
    try:
        server.wait_for_connections(100)
        thread = server.loop.thread
        server.stop()
        assert thread is not None
        assert not thread.is_alive()
        for c in clients:
            assert c.recv(1) == b""
        server.stop()  # idempotent
        assert "(stopped)" in repr(server)
    finally:
        for c in clients:
            c.close()


def test_loop_errors_are_reraised_by_check() -> None:
    class Exploding(EchoConnection):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError(f"cannot handle {data!r}")

    class ExplodingServer(EchoServer):
        def make_connection(self, sock: socket.socket, addr: object) -> Connection:
            return Exploding(self, sock, addr)

    server = ExplodingServer().start()
    try:
        with connect(server.address) as sock:
            sock.sendall(b"boom")
            assert sock.recv(1) == b"", "the failing connection is closed"
        with pytest.raises(LoopThreadError, match="cannot handle b'boom'"):
            server.wait_for_closed(1)
    finally:
        server.stop()


def test_context_manager_reraises_loop_errors_at_exit() -> None:
    class Exploding(EchoConnection):
        def data_received(self, data: bytes) -> None:
            raise RuntimeError("late failure")

    class ExplodingServer(EchoServer):
        def make_connection(self, sock: socket.socket, addr: object) -> Connection:
            return Exploding(self, sock, addr)

    # The error is raised as the server exits, inside pytest.raises.
    with (  # noqa: PT012 - the raise comes from the server's __exit__
        pytest.raises(LoopThreadError, match="late failure"),
        ExplodingServer() as server,
        connect(server.address) as sock,
    ):
        sock.sendall(b"x")
        assert sock.recv(1) == b""


def test_refuses_non_loopback_without_opt_in() -> None:
    with pytest.raises(RemoteBindError, match="allow_remote=True"):
        EchoServer("0.0.0.0").start()
    with EchoServer("0.0.0.0", allow_remote=True) as server:
        MultiConnClient(("127.0.0.1", server.port), 1).run().check()


def test_address_in_use_says_what_to_do(server: EchoServer) -> None:
    with pytest.raises(AddressInUseError, match=f"{server.port} is already in use.*port 0"):
        EchoServer(port=server.port).start()


@pytest.mark.parametrize("port", [-1, 65536, "http", 1.5, True])
def test_bad_port_is_rejected(port: object) -> None:
    with pytest.raises(AddressError, match="port must be an integer from 0 to 65535"):
        EchoServer(port=port).start()  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"high_water": 0}, "high_water must be an integer >= 1"),
        ({"high_water": 10, "low_water": 20}, "must not exceed high_water"),
        ({"max_connections": 0}, "max_connections must be an integer >= 1"),
        ({"idle_timeout": 0}, "idle_timeout must be a positive"),
    ],
)
def test_bad_options_are_rejected(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EchoServer(**kwargs)  # type: ignore[arg-type]


def test_not_started_server_explains_itself() -> None:
    server = EchoServer()
    assert "not started" in repr(server)
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.address
    server.stop()  # stopping a server that never started is harmless


def test_wait_timeout_names_what_and_the_connections(server: EchoServer) -> None:
    with connect(server.address) as sock:
        server.wait_for_connections(1)
        with pytest.raises(TimeoutError, match=r"waiting for 5 open connections(.|\n)*peer="):
            server.wait_for_connections(5, timeout=0.05)
        sock.sendall(b"a")
        assert recv_exactly(sock, 1) == b"a"


def test_a_wait_on_a_stopped_server_raises_at_once() -> None:
    # Its counts can no longer change: waiting the whole (long) timeout helps nobody.
    server = EchoServer().start()
    server.stop()
    assert server.wait_for_closed(0, timeout=30).closed == 0  # already true: returns
    started = time.monotonic()
    with pytest.raises(WaitImpossible, match=r"1 closed connections.*server is stopped"):
        server.wait_for_closed(1, timeout=30)
    with pytest.raises(TimeoutError):  # a WaitTimeout still, for code that caught one
        server.wait_for_bytes(1, timeout=30)
    assert time.monotonic() - started < 15, "the waits took their whole timeout"


def test_a_wait_from_the_loop_thread_raises_at_once_instead_of_stalling_it() -> None:
    errors: list[BaseException] = []
    returned = threading.Event()
    servers: list[EchoServer] = []

    def on_event(event: str, conn: Connection, data: bytes | None) -> None:
        if event == "data":
            try:
                servers[0].wait_for_closed(1, timeout=30)  # only the loop can close it
            except BaseException as exc:  # noqa: BLE001 - looked at by the test
                errors.append(exc)
            returned.set()

    with EchoServer(on_event=on_event) as server:
        servers.append(server)
        with connect(server.address) as sock:
            sock.sendall(b"x")
            assert returned.wait(TIMEOUT), "wait_for_closed() stalled the loop thread"
            assert recv_exactly(sock, 1) == b"x"
    assert len(errors) == 1
    assert isinstance(errors[0], WaitImpossible)
    assert "from the server's own loop thread" in str(errors[0])


def test_repr_and_connection_snapshots(server: EchoServer) -> None:
    with connect(server.address) as sock:
        sock.sendall(b"abc")
        assert recv_exactly(sock, 3) == b"abc"
        (info,) = server.connections()
        assert info.bytes_in == info.bytes_out == 3
        assert info.peer == sock.getsockname()
        text = server.loop.run_sync(lambda: repr(server.loop.handlers()))
        assert "EchoConnection" in text
        assert "in=3 out=3 buffered=0" in text
        assert f"127.0.0.1:{server.port}" in repr(server)
        assert re.search(r"connect\s+peer", info.transcript), info.transcript
        assert re.search(r"\bin\s+3 B", info.transcript), info.transcript
        assert re.search(r"\bout\s+3 B", info.transcript), info.transcript


# -- misuse, failing handlers, accept errors ---------------------------------------------------


def test_server_misuse_is_explained() -> None:
    server = EchoServer()
    with pytest.raises(RuntimeError, match="not started; call start"):
        _ = server.address
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.loop
    assert server.family == socket.AF_INET
    assert EchoServer("::1").family == socket.AF_INET6
    assert EchoServer(unix_path="/tmp/x.sock").family == socket.AF_UNIX
    server.check()  # never started: nothing to raise
    server.stop()  # never started: nothing to stop
    with EchoServer() as started:
        with pytest.raises(RuntimeError, match="already started"):
            started.start()
        assert started.__enter__() is started  # entering a started server does not restart


def test_running_context_and_exit_on_error() -> None:
    server = EchoServer()
    with server.running() as running:
        assert running is server
        results_port = server.port
    assert results_port > 0
    assert "(stopped)" in repr(server)
    # Leaving on an exception stops the server and lets the exception through unchanged.
    failing = EchoServer()
    with pytest.raises(KeyError), failing:
        raise KeyError("the test's own error")
    assert "(stopped)" in repr(failing)


def test_failing_make_connection_closes_the_socket_and_is_reported() -> None:
    class Refusing(EchoServer):
        def make_connection(self, sock: socket.socket, addr: Any) -> Connection:
            raise RuntimeError("cannot make a connection on purpose")

    server = Refusing().start()
    try:
        with socket.create_connection(server.address, timeout=WAIT) as sock:
            assert sock.recv(1) == b""  # closed by us, not left hanging
    finally:
        server.stop()
    with pytest.raises(LoopThreadError, match="cannot make a connection on purpose"):
        server.check()


def test_connection_closed_twice_is_counted_once() -> None:
    with EchoServer() as server, socket.create_connection(server.address, timeout=WAIT):
        server.wait_for_connections(1)

        def close_twice() -> None:
            conn = next(iter(server._conns.values()))
            assert isinstance(conn, EchoConnection)
            conn.close()
            server.connection_closed(conn)  # a second report is ignored

        server.loop.run_sync(close_twice)
        assert server.stats().closed == 1


class FlakyAccept(socket.socket):
    """A listening socket whose next accept() calls raise the queued errors."""

    faults: list[OSError]

    def accept(self) -> tuple[socket.socket, Any]:
        if self.faults:
            raise self.faults.pop(0)
        return super().accept()


def install_flaky_accept(server: EchoServer, faults: list[OSError]) -> None:
    def swap() -> None:
        listener = server._listener
        assert listener is not None
        listener.pause()
        listener.pause()  # already paused: no change
        old = listener.sock
        flaky = FlakyAccept(old.family, old.type, fileno=old.detach())
        flaky.faults = faults
        listener.sock = flaky
        listener.resume()

    server.loop.run_sync(swap)


def test_accept_errors_of_one_peer_are_counted_and_skipped() -> None:
    with EchoServer() as server:
        install_flaky_accept(server, [OSError(errno.ECONNABORTED, "aborted before accept")])
        with socket.create_connection(server.address, timeout=WAIT) as sock:
            sock.sendall(b"still served")
            assert sock.recv(100) == b"still served"
        stats = server.wait_for_closed(1)
        assert stats.accept_errors == 1
        assert not stats.accept_paused


def test_unexpected_accept_error_is_a_loop_error() -> None:
    server = EchoServer().start()
    try:
        install_flaky_accept(server, [OSError(errno.EINVAL, "listener broken on purpose")])
        with socket.socket() as sock:
            sock.settimeout(WAIT)
            # The failing listener is closed at once, which may reset this connection before
            # connect() returns: either way the accept was attempted.
            sock.connect_ex(server.address)
            with pytest.raises(LoopThreadError, match="listener broken on purpose"):
                server.wait_for_accepted(1, timeout=WAIT)
    finally:
        server.stop()


EMFILE_CHILD = textwrap.dedent(
    """
    import os, resource, socket
    from pytest_multiconn import EchoServer

    def open_fds():
        # Probed one by one: listing /proc/self/fd would need a descriptor of its own.
        alive = set()
        for fd in range(4096):
            try:
                os.fstat(fd)
            except OSError:
                continue
            alive.add(fd)
        return alive

    def allow_new_fds(n):
        # RLIMIT_NOFILE bounds descriptor numbers: new ones take the lowest free numbers, so
        # find the limit below which exactly n numbers are free.
        used, free, limit = open_fds(), 0, 0
        while free < n or limit in used:
            if limit not in used:
                free += 1
            limit += 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    server = EchoServer().start()
    # Client sockets exist before the limit drops: connect() needs no new descriptor.
    clients = [socket.socket() for _ in range(5)]
    allow_new_fds(2)
    for c in clients[:4]:
        c.settimeout(10)
        c.connect(server.address)
    # Retries back off (10 ms, 20 ms, 40 ms...): three errors take 70 ms, where a listener
    # that stayed registered would have failed thousands of times.
    stats = server.wait_for(lambda s: s.accept_errors >= 3 and s.accepted == 2, 10, "EMFILE")
    print("emfile", stats.accepted, stats.accept_errors <= 20, flush=True)

    # One more free descriptor: the back-off timer retries and accepts the third.
    allow_new_fds(1)
    stats = server.wait_for(lambda s: s.accepted == 3, 10, "a retry after the back-off")
    print("retried", stats.accepted, flush=True)

    # A connection closing gives its descriptor back: accepting resumes at once.
    clients[0].close()
    stats = server.wait_for(lambda s: s.accepted == 4, 10, "the fourth accept")
    print("resumed", stats.accepted, flush=True)

    # Out of descriptors again, and stopped during the back-off: stop() must not hang.
    allow_new_fds(0)
    clients[4].settimeout(10)
    clients[4].connect(server.address)
    errors = server.stats().accept_errors
    server.wait_for(lambda s: s.accept_errors > errors, 10, "EMFILE again")
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    for c in clients[1:4]:
        c.sendall(b"ping")
        assert c.recv(4) == b"ping"
    server.stop()
    for c in clients:
        c.close()
    server.check()
    print("stopped", flush=True)
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
def test_accept_backs_off_when_out_of_descriptors() -> None:
    proc = subprocess.run([sys.executable, "-c", EMFILE_CHILD], capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.split("\n") == [
        "emfile 2 True", "retried 3", "resumed 4", "stopped", ""
    ], proc.stdout + proc.stderr


# -- reliability (issue 14): idle means no progress, stop from the loop, failing handlers -------


def test_idle_timeout_spares_a_slow_reader_that_drains_our_output() -> None:
    # The server pauses reading at its high-water mark; before the fix it then counted its own
    # pause as the client's silence and reset a client that was reading all along.  Forced:
    # small kernel buffers on both sides, and a reader that starts only once the server has
    # stopped sending and then takes one small chunk per fifth of the idle timeout.  Draining
    # from the high-water mark down to the low-water mark (0) takes at least 7 such reads, so
    # the old code's "no byte received for idle_timeout" fires every time; the new one sees
    # the peer take bytes at every read.
    # Seconds, generous: the reader's thread must get the CPU once per step even on a loaded
    # machine; the old code failed on the structure (>= 7 steps of pause), not on timing.
    idle = 1.0
    step = idle / 5
    high = 16 * 1024
    chunk = 2048
    payload = os.urandom(48 * 1024)

    def small_send_buffer(event: str, conn: Connection, data: bytes | None) -> None:
        if event == "accept":
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    pace = threading.Event()  # never set: a bounded pause between reads, not a sync point
    with EchoServer(
        idle_timeout=idle, high_water=high, low_water=0, on_event=small_send_buffer
    ) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(WAIT)
        with sock:
            sock.connect(server.address)
            sock.sendall(payload)
            server.wait_for(lambda s: s.buffered > high, WAIT, "the server to stop sending")
            echoed = bytearray()
            for _ in range(len(payload) // 256):  # bound: far more reads than needed
                if len(echoed) == len(payload):
                    break
                data = sock.recv(chunk)
                assert data, f"server closed the slow reader after {len(echoed)} bytes"
                echoed += data
                pace.wait(step)
            # Every byte, no reset.  (Once all of the echo is in the kernel's buffers the
            # server cannot see the reader drain them, so an idle close may follow; it sends
            # a FIN after the data and loses nothing.)
            assert bytes(echoed) == payload
            stats = server.stats()
            assert stats.peak_buffered > high, "the server never paused: the test forced nothing"
            # Still a timeout: once neither side makes progress, the connection is closed.
            stats = server.wait_for(lambda s: s.idle_closed == 1, WAIT, "the idle close")
            assert stats.open == 0


def test_idle_timeout_spares_a_slow_reader_draining_the_kernel_buffer(tmp_path: Path) -> None:
    # The same client with the kernel holding the echo: the server paused reading, its own
    # output sits in its socket's send buffer (hundreds of KB), and a slow reader drains that
    # for seconds without the loop seeing one event (a stream socket is writable again only
    # once a good part of its send buffer is free: a quarter for Unix, a third for TCP).
    # Before: reset after the first idle timeout ("got 128,512 of 16,000,000 bytes").
    # Forced over a Unix socket, where the kernel counts every byte the peer has not read yet
    # against our send buffer, so each read shows in SIOCOUTQ (TCP on loopback opens its
    # window only a 64 KiB segment at a time): a client that keeps sending (a thread) and
    # takes 32 KiB per quarter of the idle timeout, for 60% of the server's send buffer
    # (about 2 idle timeouts), under what would make that socket writable again.
    idle = 1.5  # generous: a loaded machine may hold the reader's thread a while
    step = idle / 4
    # 32 KiB reads: the kernel gives a Unix socket's buffer space back one sent buffer (at
    # most 32 KiB) at a time, so each read shows in SIOCOUTQ.
    chunk = 32 * 1024
    sndbuf: list[int] = []

    def big_send_buffer(event: str, conn: Connection, data: bytes | None) -> None:
        if event == "accept":
            conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
            sndbuf.append(conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))

    pace = threading.Event()  # never set: a bounded pause between reads, not a sync point
    path = str(tmp_path / "echo.sock")
    payload = os.urandom(16 << 20)

    def send_all(sock: socket.socket) -> None:
        # Blocks once the server pauses reading; ends when the test closes the socket.
        with contextlib.suppress(OSError):
            sock.sendall(payload)

    with (
        EchoServer(unix_path=path, idle_timeout=idle, on_event=big_send_buffer) as server,
        socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock,
    ):
        sock.settimeout(WAIT)
        sock.connect(path)
        sender = threading.Thread(target=send_all, args=(sock,), daemon=True)
        sender.start()
        try:
            server.wait_for(
                lambda s: s.buffered > server.high_water, WAIT, "the server to pause reading"
            )
            # Under 3/4 of the send buffer, or the socket turns writable (a visible event).
            reads = int(0.6 * sndbuf[0] / chunk)
            assert reads * step >= 1.5 * idle, f"send buffer {sndbuf[0]} too small to force"
            echoed = bytearray()
            for _ in range(reads):
                data = sock.recv(chunk)
                assert data, f"server closed the slow reader after {len(echoed)} bytes"
                echoed += data
                pace.wait(step)
            assert bytes(echoed) == payload[: len(echoed)]
            stats = server.stats()
            assert (stats.open, stats.idle_closed) == (1, 0), stats
            # Stop reading: now nothing moves, and the idle timeout closes it.
            stats = server.wait_for(lambda s: s.idle_closed == 1, WAIT, "the idle close")
            assert stats.open == 0
        finally:
            with contextlib.suppress(OSError):  # the server may have closed it already
                sock.shutdown(socket.SHUT_RDWR)
            sender.join(WAIT)
            assert not sender.is_alive()


def test_idle_timeout_past_the_selector_limit_is_refused_at_construction() -> None:
    # Before: accepted, then the first client was reset by "OverflowError: timeout is too
    # large" inside the loop thread.
    with pytest.raises(ValueError, match=r"idle_timeout must be at most 2147483 seconds"):
        EchoServer(idle_timeout=30 * 24 * 3600)
    with EchoServer(idle_timeout=24 * 24 * 3600) as server, connect(server.address) as sock:
        sock.sendall(b"long idle limit")
        assert recv_exactly(sock, 15) == b"long idle limit"


def test_stop_from_an_on_event_callback_stops_the_server_and_its_thread() -> None:
    def observer(event: str, conn: Connection, data: bytes | None) -> None:
        if event == "data":
            server.stop()  # in the loop thread

    server = EchoServer(on_event=observer)
    with server:
        thread = server.loop.thread
        assert thread is not None
        with connect(server.address) as sock:
            sock.sendall(b"stop")
            thread.join(WAIT)
            assert not thread.is_alive(), "the loop thread kept echoing after stop()"
            assert recv_until_eof(sock) == b"stop"  # echoed, then closed by the stop
        with pytest.raises(ConnectionRefusedError):
            connect(server.address)  # the listener is closed too
    server.check()  # stop() from the loop thread is not an error


class ExplodingEcho(EchoConnection):
    def data_received(self, data: bytes) -> None:
        if data.startswith(b"boom"):
            raise ZeroDivisionError("handler failed on purpose")
        super().data_received(data)


class ExplodingServer(EchoServer):
    def make_connection(self, sock: socket.socket, addr: object) -> Connection:
        return ExplodingEcho(self, sock, addr)


def test_a_raising_handler_closes_only_its_connection() -> None:
    with ExplodingServer() as server, connect(server.address) as bystander:
        bystander.sendall(b"before")
        assert recv_exactly(bystander, 6) == b"before"
        with connect(server.address) as victim:
            victim.sendall(b"boom")
            # Closed with unread data is an RST, which is just as closed.
            with contextlib.suppress(ConnectionResetError):
                assert victim.recv(1) == b""
        bystander.sendall(b"after")
        assert recv_exactly(bystander, 5) == b"after"
        with connect(server.address) as newcomer:  # the listener is still there
            newcomer.sendall(b"new")
            assert recv_exactly(newcomer, 3) == b"new"
        with pytest.raises(LoopThreadError, match="handler failed on purpose"):
            server.check()
        assert server.loop.is_running()


def test_stats_after_the_client_closed_count_its_connections_as_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The 1-in-20 "open=55 closed=45" after MultiConnClient.run(), forced: the loop thread is
    # held inside a handler (after its poll) while the clients close and stats() is asked
    # for, so the FINs are in the kernel but not yet polled when the snapshot callback is
    # queued.  stats() now polls once more before it reads the counters.
    gate, blocked, queued = threading.Event(), threading.Event(), threading.Event()

    def observer(event: str, conn: Connection, data: bytes | None) -> None:
        if event == "data" and data == b"hold":
            blocked.set()
            gate.wait(WAIT)

    with EchoServer(on_event=observer) as server:
        clients = [connect(server.address) for _ in range(5)]
        try:
            for sock in clients:
                sock.sendall(b"ping")
                assert recv_exactly(sock, 4) == b"ping"
            with connect(server.address) as holder:
                server.wait_for_connections(6)
                real = server.loop.call_soon_threadsafe

                def spy(*args: Any) -> None:
                    real(*args)
                    queued.set()

                monkeypatch.setattr(server.loop, "call_soon_threadsafe", spy)
                holder.sendall(b"hold")
                assert blocked.wait(WAIT), "the loop never ran the holding handler"
                for sock in clients:
                    sock.close()
                box: list[Any] = []
                asker = threading.Thread(target=lambda: box.append(server.stats()))
                asker.start()
                assert queued.wait(WAIT), "stats() never queued its snapshot"
                gate.set()
                asker.join(WAIT)
                stats = box[0]
                assert (stats.open, stats.closed) == (1, 5), stats
        finally:
            gate.set()
            for sock in clients:
                sock.close()


def test_stats_right_after_a_client_run_are_consistent() -> None:
    with EchoServer() as server:
        for round_ in range(1, 6):
            MultiConnClient(server.address, 40).run().check()
            stats = server.stats()
            assert (stats.open, stats.closed) == (0, 40 * round_), stats


@pytest.mark.parametrize("limit", [0, 1, 2, 3])
def test_any_transcript_limit_works_end_to_end(limit: int) -> None:
    # Before: transcript_limit=1 broke every connection with IndexError in the handlers.
    with EchoServer(transcript_limit=limit) as server:
        results = MultiConnClient(server.address, 3, transcript_limit=limit).run()
        results.check()
        stats = server.wait_for_closed(3)
        assert stats.peer_errors == 0
        for info in server.recently_closed():
            # At most `limit` entries, plus one "... N earlier entries dropped ..." line.
            assert len(info.transcript.splitlines()) <= limit + 1, info.transcript
        server.check()


# -- inputs refused where they are given ---------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"idle_timeout": "1"}, r"idle_timeout must be a positive number of seconds, got '1'"),
        ({"idle_timeout": math.inf}, r"idle_timeout must be a positive finite number .* inf"),
        ({"idle_timeout": math.nan}, r"idle_timeout must be a positive finite number .* nan"),
        ({"idle_timeout": True}, r"idle_timeout must be a positive number of seconds, got True"),
        ({"transcript_limit": -1}, r"transcript_limit must be an integer >= 0, got -1"),
        ({"transcript_limit": 1.5}, r"transcript_limit must be an integer >= 0, got 1.5"),
        ({"transcript_limit": True}, r"transcript_limit must be an integer >= 0, got True"),
        ({"max_connections": "2"}, r"max_connections must be an integer >= 1, got '2'"),
        ({"backlog": -1}, r"backlog must be an integer between 0 and 2147483647, got -1"),
    ],
)
def test_bad_server_values_are_refused_naming_the_parameter(
    kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        EchoServer(**kwargs)  # type: ignore[arg-type]


def test_remote_host_and_bad_port_are_refused_in_the_constructor() -> None:
    # Before: EchoServer(host="10.0.0.1") was refused only by start().
    with pytest.raises(RemoteBindError, match=r"refusing to bind '10\.0\.0\.1'"):
        EchoServer(host="10.0.0.1")
    with pytest.raises(AddressError, match=r"port must be an integer from 0 to 65535, got '٣'"):
        EchoServer(port="٣")  # type: ignore[arg-type]


@pytest.mark.parametrize("host", ["127.0.0.1%lo", "::1%lo"])
def test_zone_index_is_refused_with_the_host_named(host: str) -> None:
    # Before: passed the loopback check, then a raw socket.gaierror.
    bare = host.split("%", maxsplit=1)[0]
    with pytest.raises(AddressError, match=rf"host '{re.escape(host)}' has a zone index"):
        EchoServer(host)
    with pytest.raises(AddressError, match=rf"use '{re.escape(bare)}'"):
        MultiConnClient((host, 9))


def test_unix_socket_in_a_missing_directory_names_the_path(tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "missing", "server.sock")
    with pytest.raises(AddressError, match=rf"{re.escape(path)}.*directory .*missing.* not exist"):
        EchoServer(unix_path=path).start()


@pytest.mark.parametrize(
    ("timeout", "message"),
    [
        (math.inf, "timeout must be a positive finite number of seconds, got inf"),
        (math.nan, "timeout must be a positive finite number of seconds, got nan"),
        ("5", "timeout must be a positive number of seconds, got '5'"),
        (-1, "timeout must be a positive number of seconds, got -1"),
    ],
)
def test_client_timeout_is_checked_where_given(timeout: object, message: str) -> None:
    # Before: MultiConnClient(timeout=inf) raised a raw OverflowError from run().
    with pytest.raises(ValueError, match=message):
        MultiConnClient(("127.0.0.1", 9), timeout=timeout)  # type: ignore[arg-type]


# -- bad arguments are refused where they are given, naming the parameter and the value -------


def _tls_config(**kwargs: Any) -> Any:
    from pytest_multiconn.tls import TLSConfig

    return TLSConfig(**kwargs)


@pytest.mark.parametrize(
    ("make", "error", "message"),
    [
        (lambda: MultiConnClient(("127.0.0.1", 1), 2, b"abc"), TypeError,
         r"messages must be an iterable of bytes.*got b'abc'"),
        (lambda: MultiConnClient(("127.0.0.1", 1), 2, "abc"), TypeError,
         r"messages must be an iterable of bytes.*got 'abc'"),
        (lambda: MultiConnClient(("127.0.0.1", 1), 2, [b"ok", 7]), TypeError,
         r"messages\[1\] must be bytes.*got 7"),
        (lambda: _tls_config(hosts="localhost"), TypeError,
         r"hosts must be an iterable of str.*got 'localhost'"),
        (lambda: _tls_config(ca="x"), TypeError, r"ca must be a trustme\.CA.*got 'x'"),
        (lambda: _tls_config(cert_fault="expired"), TypeError,
         r"cert_fault must be a certificate fault.*got 'expired'"),
        (lambda: _tls_config(handshake_timeout=math.inf), ValueError,
         r"handshake_timeout must be .*finite.*got inf"),
        (lambda: _tls_config(handshake_timeout=1e12), ValueError,
         r"handshake_timeout must be at most .*got 1000000000000\.0"),
        (lambda: EchoServer(unix_path=""), ValueError,
         r"unix_path must be a non-empty path, got ''"),
        (lambda: EchoServer(backlog=10**12), ValueError,
         r"backlog must be an integer between 0 and \d+, got 1000000000000"),
    ],
)
def test_bad_arguments_are_refused_where_given(make: Any, error: type[Exception],
                                               message: str) -> None:
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("timeout", [0, -1, math.inf, math.nan, True, "5"])
def test_a_server_process_refuses_a_timeout_it_could_not_keep(timeout: object) -> None:
    # Before: `not timeout > 0` let inf through (a start() that never gives up) and named
    # neither NaN nor a string as such.  Nothing is started: the check comes first.
    from pytest_multiconn.core.process import ServerProcess

    with pytest.raises(ValueError, match=r"^timeout must be a positive .*number of seconds"):
        ServerProcess(timeout=timeout)  # type: ignore[arg-type]
