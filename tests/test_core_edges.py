"""Edge cases of the selector loop, connections and servers: the branches everyday traffic does
not reach (descriptor exhaustion, failing handlers, errors at each I/O point, misuse).

Faults are produced for real where that is cheap (a lowered RLIMIT_NOFILE in a child process,
a peer's RST, a Unix path with no listener); where the OS cannot be made to fail on demand, a
subclass overrides the documented raw I/O points (``_recv``/``_send``) or a socket subclass
fails one call.
"""

from __future__ import annotations

import errno
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pytest_multiconn import EchoServer, LoopStuckError, LoopThreadError
from pytest_multiconn.core import loop as loop_module
from pytest_multiconn.core.connection import validate_water_marks
from pytest_multiconn.core.loop import EVENT_READ, EVENT_WRITE, Loop, _fast_epoll, _Waker
from pytest_multiconn.lowlevel import Connection, EchoConnection, Transcript

WAIT = 10.0


# -- helpers ----------------------------------------------------------------------------------


@pytest.fixture(params=["epoll", "poll"])
def loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[Loop]:
    """A loop driven from the test thread, on epoll (the fast path) and on poll (the plain
    ``selector.select()`` path other platforms take)."""
    if request.param == "poll":
        monkeypatch.setattr(selectors, "DefaultSelector", selectors.PollSelector)
    elif not hasattr(selectors, "EpollSelector"):
        pytest.skip("no epoll here")
    lp = Loop(f"multiconn-edges-{request.param}")
    try:
        yield lp
    finally:
        lp.close()


@pytest.fixture
def tcp_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """Two connected loopback TCP sockets: (ours, the peer's)."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        ours = socket.create_connection(listener.getsockname(), timeout=WAIT)
        peer, _ = listener.accept()
    peer.settimeout(WAIT)
    try:
        yield ours, peer
    finally:
        ours.close()
        peer.close()


class Recorder(Connection):
    """A connection that records its hooks."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[Any] = []
        self.received = bytearray()

    def connection_made(self) -> None:
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        self.received += data

    def connection_lost(self, exc: BaseException | None) -> None:
        self.events.append(("lost", exc))

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")


def drive(loop: Loop, predicate: Callable[[], bool], what: str) -> None:
    assert loop.run_until(predicate, WAIT), f"timed out after {WAIT}s waiting for {what}"


def recv_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


# -- the loop ----------------------------------------------------------------------------------


def test_plain_and_fast_paths_dispatch_and_record_handler_errors(loop: Loop) -> None:
    a, b = socket.socketpair()
    with a, b:

        class Exploding:
            closed = False

            def handle_event(self, mask: int) -> None:
                raise ZeroDivisionError("handler failed on purpose")

            def close(self) -> None:
                self.closed = True
                loop.unregister(a)

        handler = Exploding()
        loop.register(a, EVENT_READ, handler)
        b.send(b"x")
        drive(loop, lambda: handler.closed, "the failing handler to be closed")
        with pytest.raises(LoopThreadError, match="handler failed on purpose"):
            loop.check()


def test_handler_unregistered_earlier_in_the_same_batch_is_skipped(loop: Loop) -> None:
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        calls: list[int] = []

        class Greedy:
            def __init__(self, index: int) -> None:
                self.index = index

            def handle_event(self, mask: int) -> None:
                calls.append(self.index)
                for sock, _ in pairs:  # unregister both: the other one must not be called
                    if sock.fileno() in {k.fd for k in loop._selector.get_map().values()}:
                        loop.unregister(sock)

            def close(self) -> None:
                pass

        for i, (sock, other) in enumerate(pairs):
            loop.register(sock, EVENT_READ, Greedy(i))
            other.send(b"x")
        loop.run_once(1.0)
        assert len(calls) == 1, calls
    finally:
        for x, y in pairs:
            x.close()
            y.close()


def test_events_no_longer_wanted_are_not_dispatched(loop: Loop) -> None:
    # Both sockets are readable in one batch; the first handler to run switches the other to
    # write interest, so the other's read event is dropped and its write event comes next.
    pairs = [socket.socketpair() for _ in range(2)]
    try:
        seen: list[tuple[int, int]] = []

        class Switcher:
            def __init__(self, index: int) -> None:
                self.index = index

            def handle_event(self, mask: int) -> None:
                seen.append((self.index, mask))
                other = pairs[1 - self.index][0]
                if not seen[:-1]:
                    loop.modify(other, EVENT_WRITE, handlers[1 - self.index])
                loop.unregister(pairs[self.index][0])

            def close(self) -> None:
                pass

        handlers = [Switcher(0), Switcher(1)]
        for i, (sock, other) in enumerate(pairs):
            loop.register(sock, EVENT_READ, handlers[i])
            other.send(b"x")
        drive(loop, lambda: len(seen) == 2, "both handlers")
        assert seen[0][1] == EVENT_READ
        assert seen[1] == (1 - seen[0][0], EVENT_WRITE)
    finally:
        for x, y in pairs:
            x.close()
            y.close()


def test_interrupted_poll_is_an_empty_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    lp = Loop("multiconn-edges-eintr")
    try:
        if lp._epoll_poll is None:
            pytest.skip("no epoll fast path here")
        real = lp._epoll_poll
        interrupted = []

        def poll(timeout: float, maxevents: int) -> Any:
            if not interrupted:
                interrupted.append(True)
                raise InterruptedError
            return real(timeout, maxevents)

        lp._epoll_poll = poll
        ran = []
        lp.call_soon(ran.append, 1)
        lp.run_once(0)
        assert interrupted
        assert ran == [1]
    finally:
        lp.close()


def test_fast_path_only_for_a_real_epoll_selector() -> None:
    with selectors.PollSelector() as sel:
        assert _fast_epoll(sel) == (None, None)
    if hasattr(selectors, "EpollSelector"):
        with selectors.EpollSelector() as sel:
            assert _fast_epoll(sel)[0] is not None
            fd_map = sel._fd_to_key  # type: ignore[attr-defined]
            sel._fd_to_key = None  # type: ignore[attr-defined]  # a future stdlib, say
            try:
                assert _fast_epoll(sel) == (None, None)
            finally:
                sel._fd_to_key = fd_map  # type: ignore[attr-defined]


def test_epoll_mask_without_epoll(monkeypatch: pytest.MonkeyPatch) -> None:
    if hasattr(select, "epoll"):
        assert loop_module._epoll_mask(select.EPOLLIN) == EVENT_READ
        assert loop_module._epoll_mask(select.EPOLLOUT) == EVENT_WRITE
        monkeypatch.delattr(select, "epoll")
    assert loop_module._epoll_mask(1) == 0


def test_waker_stops_draining_at_eof() -> None:
    r, w = socket.socketpair()
    with r, w:
        r.setblocking(False)
        w.send(b"\0\0\0")
        w.close()
        _Waker(r).handle_event(EVENT_READ)  # drains, then sees EOF, and returns
        assert r.recv(1) == b""


def test_wake_with_a_full_pipe_does_not_fail() -> None:
    lp = Loop("multiconn-edges-wake")
    try:
        lp._wake_w.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1)  # the kernel's minimum
        ran: list[int] = []
        for i in range(5000):  # far more wake-ups than the pipe holds
            lp.call_soon_threadsafe(ran.append, i)
        assert lp.run_until(lambda: len(ran) == 5000, WAIT)
    finally:
        lp.close()
    lp.wake()  # after close: a no-op, not an error


def test_callback_errors_are_recorded_with_their_owner() -> None:
    lp = Loop("multiconn-edges-callback")
    try:
        lp.call_soon(lambda: 1 / 0)
        lp.run_once(0)
        with pytest.raises(LoopThreadError, match="ZeroDivisionError"):
            lp.check()
        lp.check()  # errors are forgotten once raised
    finally:
        lp.close()


def test_broken_repr_does_not_hide_the_error() -> None:
    class Unprintable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    lp = Loop("multiconn-edges-repr")
    try:
        lp.report_error(ValueError("the real error"), Unprintable())
        with pytest.raises(LoopThreadError, match=r"the real error in <.*Unprintable object at"):
            lp.check()
    finally:
        lp.close()


def test_more_than_one_error_is_counted() -> None:
    lp = Loop("multiconn-edges-errors")
    try:
        for i in range(3):
            lp.report_error(ValueError(f"error {i}"), "ctx")
        with pytest.raises(LoopThreadError, match=r"error 0 in 'ctx' \(and 2 more\)"):
            lp.check()
    finally:
        lp.close()


def test_base_exception_in_the_loop_thread_is_recorded_and_the_loop_closes() -> None:
    lp = Loop("multiconn-edges-baseexc")
    lp.start()

    def die() -> None:
        raise SystemExit("loop told to exit")

    lp.call_soon_threadsafe(die)
    thread = lp.thread
    assert thread is not None
    thread.join(WAIT)
    assert not thread.is_alive()
    assert repr(lp).startswith("<Loop 'multiconn-edges-baseexc' closed")
    with pytest.raises(LoopThreadError, match="loop told to exit"):
        lp.check()
    lp.stop()  # already finished: returns at once


def test_loop_life_cycle_misuse_is_explained() -> None:
    lp = Loop("multiconn-edges-misuse")
    assert lp.run_sync(lambda: 42) == 42  # not running: runs right here
    lp.stop()  # never started: just closes
    assert lp.handlers() == []
    assert lp.handler_count() == 0
    with pytest.raises(RuntimeError, match="closed; create a new loop"):
        lp.start()


def test_stop_from_the_loop_thread_is_refused() -> None:
    lp = Loop("multiconn-edges-selfstop")
    lp.start()
    try:
        with pytest.raises(RuntimeError, match="stop\\(\\) called from the loop thread itself"):
            lp.run_sync(lp.stop)
    finally:
        lp.close()  # close() of a started loop stops it
    assert lp.thread is not None
    assert not lp.thread.is_alive()


def test_start_that_does_not_come_up_in_time_fails() -> None:
    release = threading.Event()

    class SlowLoop(Loop):
        def _run(self) -> None:
            release.wait(WAIT)
            super()._run()

    lp = SlowLoop("multiconn-edges-slowstart")
    try:
        with pytest.raises(LoopStuckError, match=r"did not start within 0\.05s"):
            lp.start(0.05)
    finally:
        release.set()
        lp.stop()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_loop_threads_leave_sigint_and_sigterm_to_the_main_thread() -> None:
    lp = Loop("multiconn-edges-signals")
    lp.start()
    try:
        native_id = lp.run_sync(threading.get_native_id)
        with open(f"/proc/self/task/{native_id}/status") as f:
            blocked = next(int(line.split()[1], 16) for line in f if line.startswith("SigBlk"))
        for sig in (signal.SIGINT, signal.SIGTERM):
            assert blocked & (1 << (sig - 1)), f"{sig.name} is not blocked in the loop thread"
        # ...and the thread that started the loop got its own mask back.
        assert not signal.pthread_sigmask(signal.SIG_BLOCK, set()) & {signal.SIGINT}
    finally:
        lp.stop()


def test_handler_close_errors_at_shutdown_are_recorded() -> None:
    lp = Loop("multiconn-edges-closeerr")
    a, b = socket.socketpair()
    with a, b:

        class BadClose:
            def handle_event(self, mask: int) -> None:
                pass

            def close(self) -> None:
                raise OSError("close failed on purpose")

        lp.register(a, EVENT_READ, BadClose())
        lp.add_closer(lambda: 1 / 0)
        lp.start()
        lp.stop()
        with pytest.raises(LoopThreadError, match=r"(?s)ZeroDivisionError.*and 1 more"):
            lp.check()


# -- connections ---------------------------------------------------------------------------


def test_water_marks_are_validated() -> None:
    assert validate_water_marks(100, None) == (100, 25)
    for high, low, message in [
        (0, None, "high_water must be a positive"),
        (True, None, "high_water must be a positive"),
        (100, -1, "low_water must be a non-negative"),
        (100, False, "low_water must be a non-negative"),
        (100, 101, r"low_water \(101\) must not exceed high_water \(100\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            validate_water_marks(high, low)  # type: ignore[arg-type]


def test_transcript_limits_merging_and_dropping() -> None:
    off = Transcript(limit=0)
    off.record("in", 10)
    assert len(off) == 0
    t = Transcript(limit=4, origin=0.0)
    t.record("connect", note="peer x")
    for _ in range(3):
        t.record("in", 10)  # merged into one entry
    assert len(t) == 2
    assert [e.size for e in t][1] == 30
    for i in range(5):
        t.record("note", note=f"n{i}")
    assert len(t) == 4
    assert t.dropped == 3
    text = t.format()
    assert "... 3 earlier entries dropped ..." in text.splitlines()[1]
    assert text.splitlines()[0].endswith("connect  peer x")


def test_connection_repr_follows_its_state(
    loop: Loop, tcp_pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = tcp_pair
    conn = Recorder(loop, ours, "peer", label="edge")
    conn.attach()
    conn.pause_reading()
    conn.pause_reading()  # twice: no change
    assert "open read-paused" in repr(conn)
    conn.resume_reading()
    conn.resume_reading()
    conn.hold_output()
    assert "output-held" in repr(conn)
    conn.release_output()
    peer.shutdown(socket.SHUT_WR)
    conn.on_eof = lambda: None  # type: ignore[method-assign]  # stay open to show the state
    drive(loop, lambda: conn.eof_received, "the peer's EOF")
    assert "eof-received" in repr(conn)
    conn.close(reason="done here")
    assert "closed (done here)" in repr(conn)
    assert conn.events[-1] == ("lost", None)


def test_connect_failing_at_once_and_later(loop: Loop, tmp_path: Any) -> None:
    # A Unix path with no listener fails inside connect() itself...
    unix = Recorder(loop, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM), "nowhere")
    unix.connect(str(tmp_path / "no-listener.sock"))
    assert unix.closed
    assert isinstance(unix.error, OSError)
    assert "failed: ENOENT" in str(unix.error)
    # ...a closed TCP port only once the loop sees the RST.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        address = holder.getsockname()
    tcp = Recorder(loop, socket.socket(), address)
    tcp.connect(address)
    assert "connecting" in repr(tcp)
    drive(loop, lambda: tcp.closed, "the refused connect")
    assert isinstance(tcp.error, ConnectionRefusedError)


def test_write_eof_while_connecting_is_sent_after_connect(loop: Loop) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        conn = Recorder(loop, socket.socket(), listener.getsockname())
        conn.connect(listener.getsockname())
        conn.write_eof()  # nothing to flush, but not connected yet: deferred
        peer, _ = listener.accept()
        with peer:
            peer.settimeout(WAIT)
            drive(loop, lambda: conn._eof_sent, "our EOF")
            assert peer.recv(10) == b""
            conn.write_eof()  # already sent: nothing to do
            conn.close()
            conn.write_eof()  # closed: nothing to do
            conn.finish()  # closed: nothing to do


def test_idle_timeout_can_be_replaced_and_cleared(
    loop: Loop, tcp_pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _peer = tcp_pair
    conn = Recorder(loop, ours, "peer")
    conn.attach()
    conn.set_idle_timeout(60)
    first = conn._idle_timer
    conn.set_idle_timeout(0.01)  # replaces the first timer
    assert first is not None
    assert first.cancelled
    conn.set_idle_timeout(None)  # and clears it
    assert conn._idle_timer is None
    conn.set_idle_timeout(0.01)
    drive(loop, lambda: conn.closed, "the idle timeout")
    assert conn.close_reason == "idle timeout"
    conn.set_idle_timeout(1)  # closed: no timer
    assert conn._idle_timer is None
    conn._check_idle()  # a late timer on a closed connection does nothing


class FaultyIO(Recorder):
    """Raises the queued exceptions from ``_send``/``_recv`` before doing real I/O."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.send_faults: list[BaseException] = []
        self.recv_faults: list[BaseException] = []

    def _send(self, data: Any) -> int:
        if self.send_faults:
            raise self.send_faults.pop(0)
        return super()._send(data)

    def _recv(self) -> bytes:
        if self.recv_faults:
            raise self.recv_faults.pop(0)
        return super()._recv()


def test_transient_send_and_recv_errors_are_retried(
    loop: Loop, tcp_pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = tcp_pair
    conn = FaultyIO(loop, ours, "peer")
    conn.attach()
    conn.send_faults = [InterruptedError(), BlockingIOError()]
    conn.write(b"hello")  # the first send is interrupted: buffered, sent when writable
    assert conn.buffered == 5
    drive(loop, lambda: conn.buffered == 0, "the buffered bytes to go out")
    assert peer.recv(10) == b"hello"
    conn.recv_faults = [InterruptedError(), BlockingIOError()]
    peer.sendall(b"abc")
    drive(loop, lambda: bytes(conn.received) == b"abc", "the bytes after two retries")
    assert not conn.closed


@pytest.mark.parametrize("where", ["write", "writable", "readable"])
def test_peer_errors_close_only_that_connection(
    loop: Loop, tcp_pair: tuple[socket.socket, socket.socket], where: str
) -> None:
    ours, peer = tcp_pair
    conn = FaultyIO(loop, ours, "peer")
    conn.attach()
    reset = ConnectionResetError(errno.ECONNRESET, "reset by peer")
    if where == "write":
        conn.send_faults = [reset]
        conn.write(b"x")
    elif where == "writable":
        conn.send_faults = [BlockingIOError(), reset]
        conn.write(b"x")
        drive(loop, lambda: conn.closed, "the failing flush")
    else:
        conn.recv_faults = [reset]
        peer.sendall(b"x")
        drive(loop, lambda: conn.closed, "the failing read")
    assert conn.closed
    assert conn.error is reset
    assert conn.close_reason == "peer error: ConnectionResetError"
    assert "reset" in conn.transcript.format()


def test_other_os_errors_are_bugs_and_propagate(
    loop: Loop, tcp_pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _peer = tcp_pair
    conn = FaultyIO(loop, ours, "peer")
    conn.attach()
    conn.send_faults = [OSError(errno.EINVAL, "invalid argument")]
    with pytest.raises(OSError, match="invalid argument"):
        conn.write(b"x")
    conn.close()


def test_finish_flushes_a_large_backlog_then_closes(
    tcp_pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = tcp_pair
    # Fixed buffers (no autotuning): the kernel then holds far less than the payload.
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    lp = Loop("multiconn-edges-finish")
    lp.start()
    try:
        conn = Recorder(lp, ours, "peer", high_water=1 << 16)
        payload = bytes(range(256)) * 16384  # 4 MiB

        def send_and_finish() -> None:
            conn.attach()
            conn.write(payload)
            conn.finish()

        lp.run_sync(send_and_finish)
        assert recv_all(peer) == payload
        lp.run_sync(lambda: None)  # the close ran before the FIN the peer just read
        assert conn.close_reason == "finished"
        assert "pause" in conn.events
        assert "resume" in conn.events
    finally:
        lp.stop()


def test_resume_writing_may_close_the_connection(
    loop: Loop, tcp_pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = tcp_pair

    class CloseOnResume(Recorder):
        def resume_writing(self) -> None:
            super().resume_writing()
            self.close(reason="closed by resume_writing")

    conn = CloseOnResume(loop, ours, "peer", high_water=1024, low_water=512)
    conn.attach()
    conn.send_faults = []
    conn.hold_output()
    conn.write(b"z" * 4096)  # held: buffered past the high-water mark
    assert "pause" in conn.events
    conn.release_output()
    drive(loop, lambda: conn.closed, "the flush that resumes writing")
    assert conn.close_reason == "closed by resume_writing"
    peer.settimeout(WAIT)
    assert len(peer.recv(1 << 16)) > 0


def test_shutdown_after_the_peer_reset_is_a_peer_error(
    loop: Loop, tcp_pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = tcp_pair
    conn = Recorder(loop, ours, "peer")
    conn.attach()
    conn.pause_reading()  # do not notice the RST by reading
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.close()
    # The RST has arrived once the socket reports an error (bounded poll on the socket).
    poller = select.poll()
    poller.register(ours, select.POLLERR | select.POLLHUP)
    assert poller.poll(WAIT * 1000), "the peer's RST never arrived"
    conn.write_eof()
    assert conn.closed
    assert conn.close_reason.startswith("peer error: ")


def test_reset_works_even_when_linger_cannot_be_set(loop: Loop) -> None:
    class NoLinger(socket.socket):
        def setsockopt(self, *args: Any) -> None:
            raise OSError(errno.EINVAL, "no linger for you")

    a, b = socket.socketpair()
    with b:
        sock = NoLinger(a.family, a.type, fileno=a.detach())
        conn = Recorder(loop, sock, "peer")
        conn.attach()
        conn.reset()
        assert conn.closed
        assert conn.close_reason == "reset by us"
        conn.reset()  # closed: nothing to do
        assert b.recv(1) == b""


def test_close_after_the_socket_was_closed_behind_our_back(
    loop: Loop, tcp_pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _peer = tcp_pair
    conn = Recorder(loop, ours, "peer")
    conn.attach()
    ours.close()  # the selector can no longer unregister it by descriptor
    conn.close()
    assert conn.closed
    assert conn.events[-1] == ("lost", None)


# -- servers ---------------------------------------------------------------------------------


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
            server._connection_closed(conn)  # a second report is ignored

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
