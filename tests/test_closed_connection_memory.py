"""A closed connection keeps no buffers: not OpenSSL's, not those of the frames of its error.

Closed connections stay referenced a while (a server's ``recently_closed()`` list, a client's
results, a test), so whatever they point at stays in memory with them.  The soak found a TLS
echo server 4 MiB larger after one never-reading client, for as long as that connection was
in the recently-closed list: its SSL object and memory BIOs kept the size they had grown to,
and the ECONNRESET stored as ``conn.error`` kept, through its traceback, the frame of the TLS
``send()`` and the 256 KiB of ciphertext it was sending.
"""

from __future__ import annotations

import gc
import types
import weakref

from pytest_multiconn import EchoServer, MultiConnClient, TLSConfig
from pytest_multiconn.faults import NeverRead
from pytest_multiconn.lowlevel import Connection

TIMEOUT = 10.0
BIG = 64 * 1024  # a buffer this large kept by a closed connection is a leak


def _frames(tb: types.TracebackType | None) -> list[types.FrameType]:
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _big_locals(exc: BaseException) -> list[str]:
    found = []
    for frame in _frames(exc.__traceback__):
        for name, value in frame.f_locals.items():
            if isinstance(value, bytes | bytearray | memoryview) and len(value) >= BIG:
                found.append(f"{frame.f_code.co_name}: {name} ({len(value):,} B)")
    return found


def test_a_closed_tls_connection_lets_go_of_its_buffers(multiconn_tls: TLSConfig) -> None:
    with EchoServer(tls=multiconn_tls) as server:
        # A client that streams 4 MiB and never reads: the server's TLS buffers grow and its
        # output backs up; closing with unread bytes then resets the server's side.
        fault = NeverRead(size=4 * 1024 * 1024, stall=0.2)
        with MultiConnClient(server.address, 1, [b"x"], tls=server.client_tls, faults=[fault],
                             keep_open=True, timeout=TIMEOUT) as client:
            [result] = client.run()
            assert result.matched, result

            def grab() -> tuple[Connection, weakref.ref[object]]:
                [conn] = server._conns.values()
                assert conn.layer is not None
                return conn, weakref.ref(conn.layer.ssl_object)  # type: ignore[attr-defined]

            conn, ssl_object = server.loop.run_sync(grab)
            assert conn.bytes_out > 0
            assert conn.buffered > 0  # output was backing up
        server.wait_for_idle(TIMEOUT)
        assert conn.closed
        # Still referenced (by this test and the server's recently-closed list)...
        assert conn.close_reason in {c.close_reason for c in server.recently_closed()}
        gc.collect()
        # ...but its SSL object (and the BIOs it owns) is gone,
        assert ssl_object() is None, "a closed TLS connection keeps its SSL object"
        # and so is whatever the frames of its error were sending.
        assert isinstance(conn.error, ConnectionResetError), conn.close_reason
        assert _big_locals(conn.error) == []
        assert "closed" in repr(conn)
        assert conn.layer is not None
        assert conn.layer.version == "TLSv1.3"  # what a closed connection still tells
