"""The plugin as another project uses it: pytester projects, run in-process."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


def test_fixtures_in_a_fresh_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket

        def test_echo(multiconn_server, multiconn_client):
            results = multiconn_client(multiconn_server.address, 4)
            results.check()
            assert multiconn_server.wait_for_closed(4).bytes_in == 4 * 44

        def test_factory(multiconn_server_factory):
            a = multiconn_server_factory()
            b = multiconn_server_factory(host="::1", max_connections=1)
            assert a.port != b.port or a.host != b.host
            with socket.create_connection(b.address, timeout=5) as s:
                s.sendall(b"v6")
                assert s.recv(2) == b"v6"

        def test_each_test_gets_its_own_server(multiconn_server):
            assert multiconn_server.stats().accepted == 0
        """
    )
    result = pytester.runpytest("-W", "error")
    result.assert_outcomes(passed=3)


def test_marker_passes_server_options(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import pytest, socket

        @pytest.mark.multiconn_server(idle_timeout=0.05)
        def test_idle(multiconn_server):
            with socket.create_connection(multiconn_server.address, timeout=5) as s:
                assert s.recv(1) == b""
            assert multiconn_server.wait_for_closed(1).idle_closed == 1
        """
    )
    result = pytester.runpytest("--strict-markers")
    result.assert_outcomes(passed=1)


def test_loop_errors_fail_the_test_that_caused_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        from pytest_multiconn import EchoServer
        from pytest_multiconn.lowlevel import EchoConnection

        class Bad(EchoConnection):
            def data_received(self, data):
                raise ZeroDivisionError("bad handler")

        class BadServer(EchoServer):
            def make_connection(self, sock, addr):
                return Bad(self, sock, addr)

        def test_bad(multiconn_server_factory):
            server = multiconn_server_factory.adopt(BadServer())
            with socket.create_connection(server.address, timeout=5) as s:
                s.sendall(b"x")
                assert s.recv(1) == b""

        def test_innocent(multiconn_server):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_bad*", "*ZeroDivisionError: bad handler*"]
    )


def test_a_leaked_server_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        from pytest_multiconn import EchoServer

        def test_leaky(multiconn_server):
            EchoServer().start()  # never stopped

        def test_after(multiconn_server):
            pass
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_leaky*", "*EchoServer*is still running*"]
    )


def test_timeout_option_and_ini_share_one_help_text(pytester: pytest.Pytester) -> None:
    pytester.makeini(
        """
        [pytest]
        multiconn_timeout = 3.5
        """
    )
    pytester.makepyfile(
        """
        def test_timeout(multiconn_timeout):
            assert multiconn_timeout == {expected}
        """.replace("{expected}", "3.5")
    )
    pytester.runpytest().assert_outcomes(passed=1)
    pytester.makepyfile(
        """
        def test_timeout(multiconn_timeout):
            assert multiconn_timeout == 1.25
        """
    )
    pytester.runpytest("--multiconn-timeout", "1.25").assert_outcomes(passed=1)
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--multiconn-timeout=MULTICONN_TIMEOUT" in help_text
    assert help_text.count("bound in seconds on every wait") == 2  # flag and ini key


def test_fixture_docs_say_scope_and_teardown(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--fixtures")
    text = result.stdout.str()
    for name in ("multiconn_server", "multiconn_server_factory", "multiconn_client"):
        assert name in text
    assert "Function scope" in text
    assert "Teardown stops" in text


def test_plugin_can_be_disabled(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makepyfile(
        """
        def test_needs_server(multiconn_server):
            pass
        """
    )
    # `-p no:multiconn` names the entry point: this inner run loads plugins as a user's does.
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD")
    monkeypatch.delenv("PYTEST_PLUGINS")
    result = pytester.runpytest(
        "-p", "no:multiconn", "-p", "no:randomly",
        "-o", "asyncio_default_fixture_loop_scope=function",
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*fixture 'multiconn_server' not found*"])


def test_adopt_starts_and_owns_any_server(pytester: pytest.Pytester) -> None:
    # The contract of multiconn_server_factory.adopt(): one of ours, any object with
    # start()/stop(), or a context manager; anything else is a TypeError naming it.
    pytester.makepyfile(
        """
        import socket, socketserver, threading
        import pytest
        from pytest_multiconn import EchoServer

        EVENTS = []

        class Echo(socketserver.BaseRequestHandler):
            def handle(self):
                self.request.sendall(self.request.recv(64))

        class ThreadedServer:
            # Not ours: start() and stop() take no arguments.
            def __init__(self):
                self.tcp = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
                self.address = self.tcp.server_address

            def start(self):
                EVENTS.append("start")
                self.thread = threading.Thread(target=self.tcp.serve_forever)
                self.thread.start()

            def stop(self):
                EVENTS.append("stop")
                self.tcp.shutdown()
                self.tcp.server_close()
                self.thread.join(10)

        class Managed:
            def __enter__(self):
                EVENTS.append("enter")
                return self

            def __exit__(self, *exc_info):
                EVENTS.append(("exit", exc_info))

        def test_start_stop_object(multiconn_server_factory):
            server = multiconn_server_factory.adopt(ThreadedServer())
            assert EVENTS == ["start"]
            with socket.create_connection(server.address, timeout=5) as s:
                s.sendall(b"hi")
                assert s.recv(2) == b"hi"

        def test_context_manager(multiconn_server_factory):
            assert EVENTS == ["start", "stop"]
            managed = Managed()
            assert multiconn_server_factory.adopt(managed) is managed
            assert EVENTS[-1] == "enter"

        def test_ours_started_or_not(multiconn_server_factory):
            assert EVENTS[-1] == ("exit", (None, None, None))
            started = multiconn_server_factory.adopt(EchoServer().start())
            fresh = multiconn_server_factory.adopt(EchoServer())
            for server in (started, fresh):
                with socket.create_connection(server.address, timeout=5) as s:
                    s.sendall(b"x")
                    assert s.recv(1) == b"x"

        def test_anything_else(multiconn_server_factory):
            with pytest.raises(TypeError) as info:
                multiconn_server_factory.adopt(object())
            message = str(info.value)
            assert "start()" in message and "stop()" in message, message
            assert "context manager" in message, message
            assert "object" in message, message

        def test_a_stop_that_fails_fails_the_test(multiconn_server_factory):
            class Broken:
                def start(self):
                    pass

                def stop(self):
                    raise RuntimeError("stop failed")

            multiconn_server_factory.adopt(Broken())
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, errors=1)
    result.stdout.fnmatch_lines(
        ["*ERROR at teardown of test_a_stop_that_fails_fails_the_test*", "*stop failed*"]
    )
