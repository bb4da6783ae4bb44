"""Servers on one shared loop thread (``EchoServer(loop=SharedLoop(...))``), and the fixtures
that use one per process: isolation, per-server errors, leaks, wedged and dead loops."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from pytest_multiconn import EchoServer
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.registry import live_servers
from pytest_multiconn.core.shared import SharedLoop
from pytest_multiconn.core.wait import wait_until
from pytest_multiconn.errors import LoopStuckError, LoopThreadError

TIMEOUT = 10.0


@pytest.fixture
def shared() -> Iterator[SharedLoop]:
    loop = SharedLoop("multiconn-test-shared")
    try:
        yield loop
    finally:
        loop.close(TIMEOUT)


def echo(address: tuple[str, int], payload: bytes = b"ping") -> bytes:
    with socket.create_connection(address, timeout=TIMEOUT) as sock:
        sock.sendall(payload)
        got = b""
        while len(got) < len(payload):
            chunk = sock.recv(64)
            assert chunk, f"server closed after {got!r}"
            got += chunk
    return got


def test_two_servers_on_one_loop_are_isolated(shared: SharedLoop) -> None:
    a = EchoServer(loop=shared).start(TIMEOUT)
    b = EchoServer(loop=shared).start(TIMEOUT)
    try:
        assert a.loop is b.loop
        assert a.loop.thread is not None
        assert a.address != b.address
        assert echo(a.address, b"only-a") == b"only-a"
        a.wait_for_closed(1)
        assert a.stats().bytes_in == 6
        assert b.stats().accepted == 0
        assert b.stats().bytes_in == 0
        # A connection open on b, then a stops: b's connection and listener carry on.
        with socket.create_connection(b.address, timeout=TIMEOUT) as held:
            b.wait_for_connections(1)
            a.stop(TIMEOUT)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(a.address, timeout=TIMEOUT).close()
            held.sendall(b"still")
            assert held.recv(5) == b"still"
            assert echo(b.address) == b"ping"
            stats = b.stats()
            assert (stats.accepted, stats.open) == (2, 1)
        assert a not in live_servers()
        assert b in live_servers()
        assert a.stats().accepted == 1
    finally:
        a.stop(TIMEOUT)
        b.stop(TIMEOUT)
    b.check()
    a.check()
    # Stopping both left the thread running, idle, for the next server.
    thread = shared.loop.thread if shared.loop is not None else None
    assert thread is not None
    assert thread.is_alive()


def test_without_loop_a_server_has_a_thread_of_its_own(shared: SharedLoop) -> None:
    with EchoServer() as own, EchoServer(loop=shared) as on_shared:
        assert own.shared_loop is None
        assert own.loop is not on_shared.loop
        assert own.loop.thread is not on_shared.loop.thread
        assert echo(own.address) == b"ping"


def test_the_thread_is_renamed_after_each_server(shared: SharedLoop) -> None:
    with EchoServer(loop=shared, name="multiconn-first") as first:
        thread = first.loop.thread
        assert thread is not None
        assert thread.name == "multiconn-first"
        assert first.name == "multiconn-first"
        with EchoServer(loop=shared, name="multiconn-second") as second:
            assert second.loop.thread is thread
            assert thread.name == "multiconn-second"
            assert first.name == "multiconn-first"  # a server keeps its own name
    assert thread.is_alive()
    assert thread.name.startswith("multiconn-test-shared")


def test_a_handler_error_fails_only_its_own_servers_check(shared: SharedLoop) -> None:
    def boom(event: str, conn: Connection, data: bytes | None) -> None:
        if event == "data":
            raise ZeroDivisionError("bad handler")

    bad = EchoServer(loop=shared, on_event=boom).start(TIMEOUT)
    good = EchoServer(loop=shared).start(TIMEOUT)
    try:
        with socket.create_connection(bad.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"x")
            assert sock.recv(1) == b""  # the loop closed the connection that raised
        with pytest.raises(LoopThreadError, match="bad handler"):
            bad.wait_for_closed(1)
        assert echo(good.address) == b"ping"
        good.wait_for_closed(1)  # would raise if the error were good's
        assert "errors=0" in repr(good)
    finally:
        bad.stop(TIMEOUT)
        good.stop(TIMEOUT)
    good.check()
    bad.check()  # the error was raised once, by wait_for, and then forgotten
    assert shared.loop is not None
    assert shared.loop.errors == []


def test_an_error_of_no_server_in_particular_fails_every_server_on_the_loop(
    shared: SharedLoop,
) -> None:
    def plain() -> None:  # a plain function: nothing names the server it belongs to
        raise ZeroDivisionError("whose?")

    with EchoServer(loop=shared) as a, EchoServer(loop=shared) as b:
        a.loop.call_soon_threadsafe(plain)
        with pytest.raises(LoopThreadError, match="whose"):
            a.wait_for(lambda s: False, what="the error")
        with pytest.raises(LoopThreadError, match="whose"):
            b.check()
    # With no server attached it is the loop's own, as on a loop of one server.
    loop = shared.loop
    assert loop is not None
    loop.call_soon_threadsafe(plain)
    loop.run_sync(lambda: None, TIMEOUT)
    assert [type(e.exc) for e in loop.errors] == [ZeroDivisionError]


def test_a_wedged_loop_fails_that_stop_and_the_next_server_gets_a_fresh_one(
    shared: SharedLoop,
) -> None:
    release = threading.Event()
    entered = threading.Event()

    def block(event: str, conn: Connection, data: bytes | None) -> None:
        if event == "data":
            entered.set()
            release.wait(TIMEOUT)  # the loop thread is stuck here until the test lets go

    wedged = EchoServer(loop=shared, on_event=block).start(TIMEOUT)
    old_thread = wedged.loop.thread
    assert old_thread is not None
    try:
        with socket.create_connection(wedged.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"x")
            assert entered.wait(TIMEOUT), "the handler never ran"
            with pytest.raises(LoopStuckError):
                wedged.stop(0.2)
            assert wedged not in live_servers()
            assert shared.loop is None
            assert shared.discarded[-1] is wedged.loop
            with EchoServer(loop=shared) as fresh:
                assert fresh.loop is not wedged.loop
                assert fresh.loop.thread is not old_thread
                assert echo(fresh.address) == b"ping"
    finally:
        release.set()
    # Once its handler returns, the discarded loop stops by itself and closes what it held.
    old_thread.join(TIMEOUT)
    assert not old_thread.is_alive()


def test_a_loop_thread_that_died_fails_that_servers_check(shared: SharedLoop) -> None:
    def die(event: str, conn: Connection, data: bytes | None) -> None:
        if event == "data":
            raise SystemExit("handler ended the loop thread")  # not an Exception: kills it

    doomed = EchoServer(loop=shared, on_event=die).start(TIMEOUT)
    dead_loop = doomed.loop
    with socket.create_connection(doomed.address, timeout=TIMEOUT) as sock:
        sock.sendall(b"x")
        assert sock.recv(1) == b""
    thread = dead_loop.thread
    assert thread is not None
    thread.join(TIMEOUT)
    assert not thread.is_alive()
    doomed.stop(TIMEOUT)
    with pytest.raises(LoopThreadError, match="ended before the server was stopped"):
        doomed.check()
    with EchoServer(loop=shared) as fresh:
        assert fresh.loop is not dead_loop
        assert echo(fresh.address) == b"ping"


def test_stop_from_a_handler_closes_that_server_only(shared: SharedLoop) -> None:
    servers: list[EchoServer] = []

    def stop_on_data(event: str, conn: Connection, data: bytes | None) -> None:
        if event == "data":
            servers[0].stop()  # from the loop thread: scheduled, not waited for

    other = EchoServer(loop=shared).start(TIMEOUT)
    servers.append(EchoServer(loop=shared, on_event=stop_on_data).start(TIMEOUT))
    stopping = servers[0]
    try:
        with socket.create_connection(stopping.address, timeout=TIMEOUT) as sock:
            sock.sendall(b"x")
            got = b""
            while chunk := sock.recv(64):  # the echo, then EOF once the close ran
                got += chunk
            assert got in (b"", b"x")
        # EOF came from the socket's close; the loop thread forgets the connection just
        # after, so the test thread may look in between: wait for it, bounded.
        wait_until(lambda: not stopping.connections(), TIMEOUT,
                   "the stopped server to forget its connection",
                   describe=lambda: repr(stopping.connections()))
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(stopping.address, timeout=TIMEOUT).close()
        assert echo(other.address) == b"ping"
    finally:
        stopping.stop(TIMEOUT)
        other.stop(TIMEOUT)
    stopping.check()
    other.check()


def test_every_concurrent_stop_returns_once_the_listener_is_closed(shared: SharedLoop) -> None:
    # Two threads stop one server at once; whichever returns second used to return at once
    # while the first was still closing (a connect right after it succeeded, 109 of 200).
    late: list[str] = []
    for trial in range(200):
        server = EchoServer(loop=shared).start(TIMEOUT)
        address = server.address
        barrier = threading.Barrier(2, timeout=TIMEOUT)

        def stop_then_connect(server: EchoServer = server, address: tuple[str, int] = address,
                              barrier: threading.Barrier = barrier, trial: int = trial) -> None:
            barrier.wait()
            server.stop(TIMEOUT)
            try:
                socket.create_connection(address, timeout=TIMEOUT).close()
            except ConnectionRefusedError:
                return
            late.append(f"trial {trial}: a connect succeeded after stop() returned")

        threads = [threading.Thread(target=stop_then_connect) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(TIMEOUT)
            assert not t.is_alive(), f"trial {trial}: stop() did not return"
        server.check()
    assert late == [], f"{len(late)} of 400 stops returned early: {late[:5]}"


def test_arguments_are_validated() -> None:
    with pytest.raises(TypeError, match="loop must be a SharedLoop"):
        EchoServer(loop=object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="must start with 'multiconn-'"):
        SharedLoop("other")


# -- the fixtures, in an isolated pytest run ---------------------------------------------------


@pytest.fixture
def isolated(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return pytester


def run_isolated(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest("-p", "pytest_multiconn.plugin", *args)


def test_two_hundred_function_scoped_servers_share_one_thread(isolated: pytest.Pytester) -> None:
    isolated.makepyfile(
        """
        import socket
        import pytest

        threads = set()

        @pytest.mark.parametrize("i", range(200))
        def test_exchange(i, multiconn_server):
            threads.add(multiconn_server.loop.thread)
            assert multiconn_server.loop.thread.name == multiconn_server.name
            assert f"test_exchange[{i}]" in multiconn_server.name
            with socket.create_connection(multiconn_server.address, timeout=10) as sock:
                sock.sendall(b"ping")
                assert sock.recv(4) == b"ping"
            assert multiconn_server.wait_for_closed(1).bytes_in == 4

        def test_opting_out(multiconn_server_factory):
            server = multiconn_server_factory(loop=None)
            assert server.shared_loop is None
            assert server.loop.thread not in threads

        def test_one_thread_served_them_all():
            assert len(threads) == 1
        """
    )
    result = run_isolated(isolated, "-q")
    result.assert_outcomes(passed=202)


def test_a_server_left_running_on_the_shared_loop_is_a_leak(isolated: pytest.Pytester) -> None:
    isolated.makepyfile(
        """
        import threading
        from pytest_multiconn import EchoServer

        def test_leaky(multiconn_server):
            EchoServer(loop=multiconn_server.shared_loop).start()

        def test_own_thread_leaky():
            EchoServer().start()

        def test_next(multiconn_server):
            assert not [t for t in threading.enumerate() if "leaky" in t.name]
        """
    )
    result = run_isolated(isolated, "-q")
    result.assert_outcomes(passed=3, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_leaky*",
            "*LeakError: *::test_leaky leaked 1 resource(s)*",
            "*<EchoServer 'multiconn-echo[[]*test_leaky[]]-127.0.0.1:*' on * is still running;*",
            "*ERROR at teardown of test_own_thread_leaky*",
        ]
    )


def test_errors_and_wedges_fail_only_the_test_that_caused_them(
    isolated: pytest.Pytester,
) -> None:
    isolated.makepyfile(
        """
        import socket
        import threading

        release = threading.Event()
        entered = threading.Event()
        seen = {}

        def boom(event, conn, data):
            if event == "data":
                raise ZeroDivisionError("bad handler")

        def block(event, conn, data):
            if event == "data":
                entered.set()
                release.wait(10)

        def test_bad(multiconn_server_factory):
            server = multiconn_server_factory(on_event=boom)
            with socket.create_connection(server.address, timeout=5) as s:
                s.sendall(b"x")
                assert s.recv(1) == b""

        def test_innocent(multiconn_server):
            with socket.create_connection(multiconn_server.address, timeout=5) as s:
                s.sendall(b"ok")
                assert s.recv(2) == b"ok"

        def test_wedged(multiconn_server_factory):
            server = multiconn_server_factory(on_event=block)
            seen["loop"] = server.loop
            with socket.create_connection(server.address, timeout=5) as s:
                s.sendall(b"x")
                assert entered.wait(5), "the handler never ran"

        def test_after_the_wedge(multiconn_server):
            try:
                assert multiconn_server.loop is not seen["loop"]
                with socket.create_connection(multiconn_server.address, timeout=5) as s:
                    s.sendall(b"ok")
                    assert s.recv(2) == b"ok"
            finally:
                release.set()
                seen["loop"].thread.join(10)
            assert not seen["loop"].thread.is_alive()
        """
    )
    result = run_isolated(isolated, "-q", "--multiconn-timeout", "0.5")
    result.assert_outcomes(passed=4, errors=2)
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_bad*",
            "*ZeroDivisionError: bad handler*",
            "*ERROR at teardown of test_wedged*",
            "*LoopStuckError*",
        ]
    )
