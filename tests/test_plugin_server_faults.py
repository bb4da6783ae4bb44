"""The server-fault fixtures, run in a pytester sandbox."""

from __future__ import annotations

import re
import socket

import pytest

from pytest_multiconn import FaultyEchoServer
from pytest_multiconn.core.seed import SEED_ENV, derive_seed
from pytest_multiconn.faults import ChunkedEcho

pytestmark = pytest.mark.filterwarnings("error")


def test_factory_starts_seeded_servers_and_stops_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        from pytest_multiconn.faults import ChunkedEcho, CloseAfter
        from pytest_multiconn.core.seed import derive_seed, get_run_seed

        SERVERS = []

        def test_use(multiconn_faulty_server_factory, request):
            chunky = multiconn_faulty_server_factory(ChunkedEcho(2), idle_timeout=5)
            short = multiconn_faulty_server_factory(CloseAfter(3))
            fixed = multiconn_faulty_server_factory(seed=7)
            SERVERS.extend([chunky, short, fixed])
            nodeid = request.node.nodeid
            assert chunky.seed == derive_seed(get_run_seed(), nodeid, "faulty-server", 1)
            assert short.seed == derive_seed(get_run_seed(), nodeid, "faulty-server", 2)
            assert fixed.seed == 7
            with socket.create_connection(chunky.address, timeout=5) as sock:
                sock.sendall(b"abcdef")
                got = b""
                while len(got) < 6:
                    got += sock.recv(6)
                assert got == b"abcdef"
            assert max(e.size for e in chunky.fault_events("send")) <= 2
            with socket.create_connection(short.address, timeout=5) as sock:
                sock.sendall(b"abcdef")
                got = b""
                while chunk := sock.recv(6):
                    got += chunk
                assert got == b"abc"

        def test_all_stopped():
            assert len(SERVERS) == 3
            assert all("(stopped)" in repr(s) for s in SERVERS)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)


def test_teardown_closes_stalled_connections_when_the_test_fails(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import socket
        from pytest_multiconn.faults import DelayEcho, Stall, StopAccepting

        SERVERS = []

        def test_fails(multiconn_faulty_server_factory):
            # Every kind of connection a stop must close: stalled without reading, stalled
            # after the client's EOF, a delay queue that is never released, a paused listener.
            unread = multiconn_faulty_server_factory(Stall(read=False))
            eof = multiconn_faulty_server_factory(Stall())
            slow = multiconn_faulty_server_factory(DelayEcho(60))
            closed = multiconn_faulty_server_factory(StopAccepting())
            SERVERS.extend([unread, eof, slow, closed])
            socks = [socket.create_connection(s.address, timeout=5) for s in SERVERS]
            try:
                socks[0].sendall(b"x" * 100)
                socks[1].shutdown(socket.SHUT_WR)
                socks[2].sendall(b"later")
                eof.wait_for(lambda s: s.open == 1, 5)
                slow.wait_for_bytes(5)
                assert False, "fails on purpose"
            finally:
                for sock in socks:
                    sock.close()

        def test_after():
            assert all("(stopped)" in repr(s) for s in SERVERS)
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.no_fnmatch_line("*LeakError*")
    result.stdout.no_fnmatch_line("*ResourceWarning*")


def test_errors_in_a_custom_fault_fail_the_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        from pytest_multiconn.faults import ServerFaultSession, ServerFault

        class Broken(ServerFault):
            def open(self, conn, rng):
                return Boom(self, conn, rng)

        class Boom(ServerFaultSession):
            def made(self):
                raise RuntimeError("boom in made()")

        def test_broken(multiconn_faulty_server_factory):
            server = multiconn_faulty_server_factory(Broken())
            with socket.create_connection(server.address, timeout=5):
                server.wait_for_closed(1)
        """
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*boom in made()*"])
    assert result.ret != 0


def test_closed_port_fixture_refuses_then_releases(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        import pytest

        ADDRESSES = []

        def test_refused(multiconn_closed_port):
            ADDRESSES.append(multiconn_closed_port)
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection(multiconn_closed_port, timeout=5)

        def test_released():
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind(ADDRESSES[0])  # teardown gave the port back
        """
    )
    result = pytester.runpytest()
    result.assert_outcomes(passed=2)


def test_run_seed_replays_chunk_sizes_across_processes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The inner run (a separate process, seeded through the environment) prints its chunk
    # sizes; this process recomputes them from the same run seed and node id.
    pytester.makepyfile(
        test_sizes="""
        import socket
        from pytest_multiconn.faults import ChunkedEcho

        def test_sizes(multiconn_faulty_server_factory):
            server = multiconn_faulty_server_factory(ChunkedEcho(9))
            with socket.create_connection(server.address, timeout=5) as sock:
                sock.sendall(bytes(300))
                got = 0
                while got < 300:
                    got += len(sock.recv(300))
            print("SIZES", [e.size for e in server.fault_events("send")])
        """
    )
    monkeypatch.setenv(SEED_ENV, "11")
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    match = re.search(r"SIZES (\[.*\])", result.stdout.str())
    assert match is not None, result.stdout.str()

    def sizes(run_seed: int) -> str:
        seed = derive_seed(run_seed, "test_sizes.py::test_sizes", "faulty-server", 1)
        with FaultyEchoServer(faults=[ChunkedEcho(9)], seed=seed) as server, \
                socket.create_connection(server.address, timeout=5) as sock:
            sock.sendall(bytes(300))
            got = 0
            while got < 300:
                got += len(sock.recv(300))
            return str([e.size for e in server.fault_events("send")])

    assert match.group(1) == sizes(11)
    assert match.group(1) != sizes(12)
