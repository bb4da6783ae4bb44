"""The plain EchoServer's inline read-echo path keeps every behaviour of the general path.

The plain server (no TLS, no observer) echoes through ``_PlainEchoConnection.handle_event``,
which reads into one buffer shared by all the plain connections its loop thread serves (of
every server on a shared loop) and folds ping-pong into
the transcript inline; a server with an ``on_event`` observer takes the general path.  These
tests hold the two to the same transcripts and prove the shared buffer never leaks one
connection's bytes into another's buffered output.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import Any

from helpers import WAIT, connect, recv_exactly
from pytest_multiconn import EchoServer
from pytest_multiconn.core.connection import Connection
from pytest_multiconn.core.loop import Loop
from pytest_multiconn.core.shared import SharedLoop
from pytest_multiconn.lowlevel import wait_until
from pytest_multiconn.servers.echo import EchoConnection, _PlainEchoConnection


def handlers(server: EchoServer) -> list[Any]:
    return server.loop.run_sync(
        lambda: [h for h in server.loop.handlers() if isinstance(h, Connection)]
    )


def entry_shapes(server: EchoServer) -> list[tuple[str, int, int, str]]:
    """(direction, bytes, count, note) of the one connection's transcript, in the loop thread."""

    def shapes() -> list[tuple[str, int, int, str]]:
        (conn,) = [h for h in server.loop.handlers() if isinstance(h, Connection)]
        return [(e.direction, e.size, e.count, e.note) for e in conn.transcript.entries()]

    return server.loop.run_sync(shapes)


def ping_pong(sock: socket.socket, rounds: int, size: int) -> None:
    for i in range(rounds):
        msg = bytes([i % 251]) * size
        sock.sendall(msg)
        assert recv_exactly(sock, size) == msg, f"round {i} echoed other bytes"


def test_plain_server_uses_the_fast_path_and_an_observer_the_general_one() -> None:
    with EchoServer() as plain, connect(plain.address) as sock:
        ping_pong(sock, 1, 8)
        assert [type(h) for h in handlers(plain)] == [_PlainEchoConnection]
    with EchoServer(on_event=lambda *a: None) as observed, connect(observed.address) as sock:
        ping_pong(sock, 1, 8)
        assert [type(h) for h in handlers(observed)] == [EchoConnection]


def test_ping_pong_transcript_folds_counts_like_the_general_path() -> None:
    rounds, size = 300, 100
    shapes = []
    for kwargs in ({}, {"on_event": lambda *a: None}):
        with EchoServer(**kwargs) as server, connect(server.address) as sock:  # type: ignore[arg-type]
            ping_pong(sock, rounds, size)
            shapes.append(entry_shapes(server))
            (info,) = server.connections()
            assert info.bytes_in == info.bytes_out == rounds * size
    fast, general = shapes
    # One round trip per message on loopback: each 100-byte send arrives in one recv.  The
    # connect entry's note names the peer's port, which differs.
    assert fast[1:] == general[1:], (fast, general)
    assert [s[0] for s in fast] == ["connect", "in", "out"], fast
    assert fast[1][1:3] == (rounds * size, rounds), fast
    assert fast[2][1:3] == (rounds * size, rounds), fast


def test_fold_restarts_after_another_entry_interrupts_the_exchange() -> None:
    with EchoServer() as server, connect(server.address) as sock:
        ping_pong(sock, 5, 10)
        # A note between two exchanges: the remembered pair is no longer the last two
        # entries, so the next exchange starts a new pair (and then folds into that one).
        server.loop.run_sync(lambda: handlers(server)[0].transcript.record("note", note="mark"))
        ping_pong(sock, 7, 10)
        shapes = entry_shapes(server)
    assert [(d, n, c) for d, n, c, _ in shapes] == [
        ("connect", 0, 1),
        ("in", 50, 5),
        ("out", 50, 5),
        ("note", 0, 1),
        ("in", 70, 7),
        ("out", 70, 7),
    ], shapes


def test_reading_the_transcript_mid_exchange_shows_every_exchange_so_far() -> None:
    with EchoServer() as server, connect(server.address) as sock:
        seen = []
        for _ in range(4):
            ping_pong(sock, 25, 10)
            # Read (as a failure report does, in the loop thread) while the ping-pong is
            # being counted on the connection: the counts so far are written in first.
            seen.append([(d, n, c) for d, n, c, _ in entry_shapes(server)][1:])
            (info,) = server.connections()
            assert f"{len(seen) * 250} B in {len(seen) * 25} ops" in info.transcript
    assert seen == [[("in", 250 * k, 25 * k), ("out", 250 * k, 25 * k)] for k in (1, 2, 3, 4)]


def test_transcript_limit_still_holds_on_the_fast_path() -> None:
    with EchoServer(transcript_limit=4) as server, connect(server.address) as sock:
        for i in range(6):
            ping_pong(sock, 2, 10)
            server.loop.run_sync(
                lambda i=i: handlers(server)[0].transcript.record("note", note=f"n{i}")
            )
        ping_pong(sock, 3, 10)
        (conn,) = handlers(server)
        entries = server.loop.run_sync(conn.transcript.entries)
        dropped = server.loop.run_sync(lambda: conn.transcript.dropped)
    assert len(entries) == 4, entries
    assert entries[0].direction == "connect"
    assert [(e.direction, e.size, e.count) for e in entries[-2:]] == [("in", 30, 3), ("out", 30, 3)]
    assert dropped > 0


def test_shared_read_buffer_never_leaks_into_another_connections_output() -> None:
    """Connection A's echo waits in ``_out`` (its peer is not reading) while connection B's
    reads overwrite the shared read buffer: A must still get back exactly its own bytes."""
    payload = os.urandom(8 * 1024 * 1024)
    with (
        EchoServer(high_water=64 * 1024) as server,
        connect(server.address) as a,
        connect(server.address) as b,
    ):
        writer = threading.Thread(target=a.sendall, args=(payload,), daemon=True)
        writer.start()
        # Forced: A's output is buffered in the server (it paused reading at high water).
        wait_until(
            lambda: [c for c in server.connections() if c.reading_paused and c.buffered],
            WAIT,
            "connection A to buffer output and pause reading",
            describe=lambda: str(server.connections()),
        )
        ping_pong(b, 50, 60 * 1024)  # B's reads go through the same buffer, 50 times over
        echoed = recv_exactly(a, len(payload))
        writer.join(WAIT)
        assert not writer.is_alive()
    assert echoed == payload


def test_shared_read_buffer_never_leaks_across_servers_of_one_loop_thread() -> None:
    """The read buffer is the loop thread's, not the server's: two servers on one shared
    loop, A's echo held in ``_out`` on the first while B's reads on the second overwrite the
    same buffer; A still gets back exactly its own bytes."""
    payload = os.urandom(8 * 1024 * 1024)
    shared = SharedLoop("multiconn-test-buffer")
    try:
        with (
            EchoServer(high_water=64 * 1024, loop=shared) as first,
            EchoServer(loop=shared) as second,
            connect(first.address) as a,
            connect(second.address) as b,
        ):
            assert first.loop is second.loop
            writer = threading.Thread(target=a.sendall, args=(payload,), daemon=True)
            writer.start()
            wait_until(
                lambda: [c for c in first.connections() if c.reading_paused and c.buffered],
                WAIT,
                "connection A to buffer output and pause reading",
                describe=lambda: str(first.connections()),
            )
            ping_pong(b, 50, 60 * 1024)
            # Both connections took the inline path, so both read into the one buffer.
            assert [type(h) for h in handlers(first)] == [_PlainEchoConnection] * 2
            echoed = recv_exactly(a, len(payload))
            writer.join(WAIT)
            assert not writer.is_alive()
    finally:
        shared.close()
    assert echoed == payload


def test_ping_pong_counts_as_activity_for_the_idle_timeout() -> None:
    idle = 0.2
    with EchoServer(idle_timeout=idle) as server, connect(server.address) as sock:
        # Keep exchanging for several idle timeouts: the inline path stamps last_received
        # (from the loop's per-batch clock), so the connection stays open.
        deadline = time.monotonic() + 4 * idle
        rounds = 0
        while time.monotonic() < deadline and rounds < 1_000_000:
            ping_pong(sock, 1, 16)
            rounds += 1
        assert server.stats().idle_closed == 0
        # Then silence: the idle timeout still closes it.
        assert sock.recv(1) == b"", "a silent client is closed by the idle timeout"
        assert server.wait_for_closed(1).idle_closed == 1


def test_loop_poll_time_is_read_after_every_poll() -> None:
    for fast in (True, False):
        loop = Loop()
        try:
            if not fast:
                loop._epoll_poll = None  # the plain selectors path (non-Linux platforms)
            before = time.monotonic()
            assert loop.poll_time <= before
            loop.run_once(0)
            assert loop.poll_time >= before, f"poll_time not refreshed (epoll path: {fast})"
        finally:
            loop.close()
