"""Test your own client of a raw TCP protocol against a scripted server: what it must send,
what it gets back, and the failures real peers produce (a reset in the middle of a reply).

Run: ``pytest examples/test_your_client.py``
"""

from __future__ import annotations

import socket
from typing import Any

import pytest

from pytest_multiconn.servers import Abort, Close, Expect, Reply


def fetch_greeting(address: Any, name: str) -> str:
    """Your client: ``HELLO name`` -> ``WELCOME text``; raises ConnectionError on a cut."""
    with socket.create_connection(address, timeout=5) as sock:
        sock.sendall(f"HELLO {name}\n".encode())
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(1024)
            if not chunk:
                raise ConnectionError(f"server closed after {reply!r}")
            reply += chunk
    if not reply.startswith(b"WELCOME "):
        raise ValueError(f"unexpected reply {reply!r}")
    return reply[len(b"WELCOME "):-1].decode()


def test_client_speaks_the_protocol(multiconn_scripted_server_factory: Any) -> None:
    server = multiconn_scripted_server_factory(
        [Expect(line=b"HELLO ada"), Reply(b"WELCOME "), Reply(b"back, ada\n"), Close()]
    )
    assert fetch_greeting(server.address, "ada") == "back, ada"


def test_client_reports_a_reset_mid_reply(multiconn_scripted_server_factory: Any) -> None:
    server = multiconn_scripted_server_factory(
        [Expect(regex=rb"HELLO \w+\n"), Reply(b"WELC"), Abort()]
    )
    with pytest.raises(ConnectionError):
        fetch_greeting(server.address, "bob")
