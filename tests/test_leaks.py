"""The per-test leak check: a server or loop thread left running fails the test that left it."""

from __future__ import annotations

import re
import threading

import pytest

from pytest_multiconn import EchoServer
from pytest_multiconn.core.registry import current_test, live_servers, live_threads


def test_server_left_running_is_an_error_at_teardown(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import threading
        from pytest_multiconn import EchoServer

        def test_leaky():
            EchoServer().start()

        def test_next_test_starts_clean():
            # The leak was stopped when it was reported: no thread of it is left.
            assert not [t for t in threading.enumerate() if "test_leaky" in t.name]
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    out = result.stdout.str()
    assert "ERROR at teardown of test_leaky" in out
    assert re.search(
        r"LeakError: test_server_left_running_is_an_error_at_teardown\.py::test_leaky leaked 1 "
        r"resource\(s\) of pytest-multiconn:\n"
        r"  <EchoServer 'multiconn-echo\[(gw\d+:)?test_leaky\]-127\.0\.0\.1:\d+' "
        r"on 127\.0\.0\.1:\d+ .*> "
        r"is still running; started at test_server_left_running_is_an_error_at_teardown\.py:5 "
        r"in test_leaky during ",
        out,
    ), out


def test_origin_names_the_helper_and_its_caller(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(
        """
        from pytest_multiconn import EchoServer

        def make_server():
            return EchoServer().start()
        """
    )
    pytester.makepyfile(
        """
        from conftest import make_server

        def test_via_helper():
            make_server()
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        ["*is still running; started at conftest.py:4 in make_server <- "
         "test_origin_names_the_helper_and_its_caller.py:4 in test_via_helper during*"]
    )


def test_loop_thread_left_running_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_multiconn.lowlevel import Loop

        LOOPS = []

        def test_raw_loop():
            loop = Loop("multiconn-my-raw-loop")
            loop.start()
            LOOPS.append(loop)

        def test_cleanup():
            LOOPS.pop().stop()
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*thread 'multiconn-my-raw-loop' is still alive*"])


def test_wide_scoped_fixtures_are_not_leaks(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_multiconn import EchoServer
        from pytest_multiconn.lowlevel import Loop

        @pytest.fixture(scope="module")
        def module_server():
            with EchoServer() as server:
                yield server

        @pytest.fixture(scope="session")
        def session_loop():
            loop = Loop("multiconn-session-loop")
            loop.start()
            yield loop
            loop.stop()

        def test_one(module_server, session_loop, multiconn_client):
            multiconn_client(module_server.address, 1).check()

        def test_two(module_server, session_loop, multiconn_session_server, multiconn_client):
            multiconn_client(module_server.address, 1).check()
            multiconn_client(multiconn_session_server.address, 1).check()
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)


def test_function_fixture_that_leaks_is_caught(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_multiconn import EchoServer

        @pytest.fixture
        def forgetful_server():
            yield EchoServer().start()  # never stopped

        def test_uses_it(forgetful_server):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*started by fixture 'forgetful_server' during *test_uses_it*"])


def test_leak_is_added_to_an_existing_teardown_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_multiconn import EchoServer

        @pytest.fixture
        def broken():
            server = EchoServer().start()
            yield server
            raise RuntimeError("teardown broke before stopping the server")

        def test_it(broken):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, errors=1)
    out = result.stdout.str()
    assert "RuntimeError: teardown broke before stopping the server" in out
    assert "leaked 1 resource(s) of pytest-multiconn" in out


def test_stopped_server_with_open_socket_is_reported(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        from pytest_multiconn import EchoServer
        from pytest_multiconn.lowlevel import EchoConnection

        HELD = []

        class StubbornConnection(EchoConnection):
            def close(self, exc=None, reason=""):
                HELD.append(self.sock)
                raise OSError("close refused on purpose")

        class StubbornServer(EchoServer):
            def make_connection(self, sock, addr):
                return StubbornConnection(self, sock, addr)

        def test_leaves_socket():
            server = StubbornServer().start()
            with socket.create_connection(server.address, timeout=5):
                server.wait_for_connections(1)
            server.stop()

        def test_cleanup():
            for sock in HELD:
                sock.close()
        """
    )
    result = pytester.runpytest("-p", "no:randomly")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*(stopped)*left a socket open: <StubbornConnection conn-* fd=* open *started at*"]
    )


def test_thread_names_carry_the_test(multiconn_server: EchoServer) -> None:
    thread = multiconn_server.loop.thread
    assert thread is not None
    assert thread.name.startswith("multiconn-echo[")
    assert "test_thread_names_carry_the_test]-127.0.0.1:" in thread.name
    assert thread.name.endswith(f":{multiconn_server.port}")


def test_explicit_names_are_kept() -> None:
    with EchoServer(name="multiconn-mine") as server:
        assert server.name == "multiconn-mine"
        assert server.loop.thread is not None
        assert server.loop.thread.name == "multiconn-mine"


def test_record_lists_servers_of_this_test_only(multiconn_server: EchoServer) -> None:
    record = current_test()
    assert record is not None
    assert record.nodeid.endswith("::test_record_lists_servers_of_this_test_only")
    assert record.servers == [multiconn_server]
    with EchoServer() as other:
        assert record.servers == [multiconn_server, other]
    assert other not in live_servers()


def test_nothing_of_ours_outlives_a_test() -> None:
    # Every earlier test of this module stopped what it started (or the check would have
    # failed it): only wider-scoped fixtures' threads may be alive here.
    record = current_test()
    assert record is not None
    mine = [t for t in live_threads() if t not in record.threads_before]
    assert mine == []
    assert all(t.is_alive() for t in threading.enumerate())
