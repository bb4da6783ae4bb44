"""Test your own line protocol: your asyncio.Protocol, hosted by the ``multiconn_server``
fixture in about a millisecond, then checked by the suite and a misbehaving client.

Run: ``pytest examples/test_your_line_protocol.py``
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pytest_multiconn import MultiConnClient
from pytest_multiconn.exchanges import Lines
from pytest_multiconn.faults import PartialSend, SlowReader
from pytest_multiconn.suite import run_checks


class Shout(asyncio.Protocol):
    """Your server: answers each line in capitals."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            self.transport.write(line.upper() + b"\n")


SHOUT = Lines(reply=bytes.upper)


@pytest.mark.multiconn_server(protocol=Shout)
def test_replies_survive_tiny_sends_and_slow_readers(multiconn_server: Any) -> None:
    faults = [PartialSend(max_chunk=1), SlowReader(256 * 1024)]
    MultiConnClient(multiconn_server.address, 4, exchange=SHOUT, requests=20, faults=faults,
                    seed=3).run().check()


@pytest.mark.multiconn_server(protocol=Shout)
def test_the_suite(multiconn_server: Any) -> None:
    report = run_checks(multiconn_server.address, SHOUT, seed=3,
                        only=["exchange", "partial_send", "pipelining", "half_close"])
    assert report.ok, report.table()
