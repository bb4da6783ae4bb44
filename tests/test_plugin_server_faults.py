"""The server-fault fixtures, run in a pytester sandbox."""

from __future__ import annotations

import re
import socket

import pytest

from helpers import connect, recv_until_eof
from pytest_multiconn import EchoServer
from pytest_multiconn.core.seed import SEED_ENV, derive_seed
from pytest_multiconn.faults import Corrupt

pytestmark = pytest.mark.filterwarnings("error")


def test_factory_starts_seeded_servers_and_stops_them(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import socket
        from pytest_multiconn.faults import LimitData, Slicer
        from pytest_multiconn.core.seed import derive_seed, get_run_seed

        SERVERS = []

        def test_use(multiconn_faulty_server_factory, request):
            chunky = multiconn_faulty_server_factory(Slicer(average_size=2), idle_timeout=5)
            short = multiconn_faulty_server_factory(LimitData(bytes=3))
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
            [name] = [f.name for f in chunky.faults()]
            assert name == "slicer_downstream"
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
        from pytest_multiconn.faults import Latency, Timeout

        SERVERS = []

        def test_fails(multiconn_faulty_server_factory):
            # Every kind of connection a stop must close: stalled without reading, stalled
            # after the client's EOF, a delay queue that is never released, a paused listener.
            unread = multiconn_faulty_server_factory()
            unread.add(Latency(ms=60_000), direction="upstream")
            eof = multiconn_faulty_server_factory(Timeout())
            slow = multiconn_faulty_server_factory(Latency(ms=60_000))
            closed = multiconn_faulty_server_factory()
            closed.pause_accepting()
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
        from dataclasses import dataclass
        from pytest_multiconn.faults import Stage, Toxic

        class Boom(Stage):
            def start(self):
                raise RuntimeError("boom in start()")

        @dataclass(frozen=True, repr=False)
        class Broken(Toxic):
            name = "broken"
            stage_class = Boom

        def test_broken(multiconn_faulty_server_factory):
            server = multiconn_faulty_server_factory(Broken())
            with socket.create_connection(server.address, timeout=5):
                server.wait_for_closed(1)
        """
    )
    result = pytester.runpytest()
    result.stdout.fnmatch_lines(["*boom in start()*"])
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


def test_run_seed_replays_the_server_seed_across_processes(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The inner run (a separate process, seeded through the environment) prints its server's
    # seed and the bytes its client got back through a seeded Corrupt; this process builds
    # the same server from the same run seed and node id and must get the same bytes (which
    # bits flip is a function of the seed alone, not of timing or of how reads split).
    pytester.makepyfile(
        test_bits="""
        import socket
        from pytest_multiconn.faults import Corrupt

        def test_bits(multiconn_faulty_server_factory):
            server = multiconn_faulty_server_factory(Corrupt(rate=0.05))
            with socket.create_connection(server.address, timeout=5) as sock:
                sock.sendall(bytes(400))
                sock.shutdown(socket.SHUT_WR)
                got = b"".join(iter(lambda: sock.recv(65536), b""))
            print("SEED", server.seed, "GOT", got.hex())
        """
    )
    monkeypatch.setenv(SEED_ENV, "11")
    result = pytester.runpytest_subprocess("-s")
    result.assert_outcomes(passed=1)
    match = re.search(r"SEED (\d+) GOT ([0-9a-f]+)", result.stdout.str())
    assert match is not None, result.stdout.str()

    def echoed(run_seed: int) -> tuple[int, str]:
        seed = derive_seed(run_seed, "test_bits.py::test_bits", "faulty-server", 1)
        with EchoServer(faults=[Corrupt(rate=0.05)], seed=seed) as server, \
                connect(server.address) as sock:
            sock.sendall(bytes(400))
            sock.shutdown(socket.SHUT_WR)
            return seed, recv_until_eof(sock).hex()

    seed, got = echoed(11)
    assert int(match.group(1)) == seed
    assert got != bytes(400).hex(), "Corrupt(rate=0.05) flipped nothing in 400 bytes"
    assert match.group(2) == got
    other_seed, other = echoed(12)
    assert other_seed != seed
    assert other != got
