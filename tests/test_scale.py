"""Scale: one EchoServer holds thousands of concurrent connections and echoes on all of them.

The 10,000-connection figure (accept rate, memory per connection) is benchmarks/scale.py's
job: it puts the clients in another process.  Here both ends share this process, so 2,000
connections need about 4,000 descriptors; the fixture raises the soft limit as far as the
hard limit allows and skips, saying why, when that is not enough.
"""

from __future__ import annotations

import resource
import selectors
import socket
import time
from collections.abc import Iterator

import pytest

from pytest_multiconn import EchoServer, MultiConnClient

#: 2,000 connections in one process: a soak-ish run whose time is the machine's.
pytestmark = pytest.mark.load_sensitive

N = 2000
#: Descriptors needed beyond two per connection (xdist, pytest, the loop's socketpair...).
SPARE = 256
TIMEOUT = 60.0


@pytest.fixture
def enough_descriptors() -> Iterator[int]:
    """Raise RLIMIT_NOFILE's soft limit for this test (restored after); yields the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * N + SPARE
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"needs {need} descriptors but the hard limit is {hard}; raise it with "
                    f"`ulimit -Hn {need}` (as root) to run this test")
    if soft != resource.RLIM_INFINITY and soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))
    try:
        yield max(soft, need)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _payload(i: int) -> bytes:
    return f"connection {i:05d} says hello".encode() * 3


@pytest.mark.usefixtures("enough_descriptors")
def test_server_holds_2000_connections_and_echoes_on_all() -> None:
    socks: list[socket.socket] = []
    with EchoServer(backlog=4096) as server, selectors.DefaultSelector() as sel:
        try:
            for _ in range(N):
                socks.append(socket.create_connection(server.address, timeout=TIMEOUT))
            stats = server.wait_for_connections(N, timeout=TIMEOUT)
            assert stats.open == N  # all of them at once, not one after the other

            for i, sock in enumerate(socks):
                sock.sendall(_payload(i))
                sock.setblocking(False)
                sel.register(sock, selectors.EVENT_READ, i)
            got = {i: b"" for i in range(N)}
            pending = set(range(N))
            deadline = time.monotonic() + TIMEOUT
            while pending:
                remaining = deadline - time.monotonic()
                assert remaining > 0, (
                    f"{len(pending)} of {N} connections got no full echo within {TIMEOUT}s, "
                    f"e.g. connection {min(pending)}: {got[min(pending)]!r}; {server!r}"
                )
                for key, _ in sel.select(remaining):
                    i = key.data
                    chunk = key.fileobj.recv(4096)  # type: ignore[union-attr]
                    assert chunk, f"server closed connection {i} before echoing"
                    got[i] += chunk
                    if len(got[i]) >= len(_payload(i)):
                        pending.discard(i)
                        sel.unregister(key.fileobj)
            assert all(got[i] == _payload(i) for i in range(N))
            total = sum(len(_payload(i)) for i in range(N))
            stats = server.wait_for_bytes(total, timeout=TIMEOUT)
            assert stats.bytes_out == total
            assert stats.open == N
            assert stats.peer_errors == 0
        finally:
            for sock in socks:
                sock.close()
        server.wait_for_idle(timeout=TIMEOUT)
        assert server.stats().closed == N


@pytest.mark.usefixtures("enough_descriptors")
def test_multiconn_client_runs_2000_connections_against_one_server() -> None:
    with EchoServer(backlog=4096) as server:
        results = MultiConnClient(
            server.address, N, messages=[b"ping " * 20, b"pong " * 20], timeout=TIMEOUT
        ).run()
        results.check()
        assert len(results) == N
        stats = server.wait_for_closed(N, timeout=TIMEOUT)
        assert stats.accepted == N
        assert stats.bytes_in == stats.bytes_out == N * 200
