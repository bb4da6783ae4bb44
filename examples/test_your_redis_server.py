"""Test your own Redis-protocol server: here a small one written for the loop (swap in yours:
a subprocess, or your asyncio.Protocol on a ProtocolServer).

Run: ``pytest examples/test_your_redis_server.py``
"""

from __future__ import annotations

from pytest_multiconn import MultiConnClient
from pytest_multiconn.exchanges import RESP
from pytest_multiconn.faults import HalfClose, PartialSend
from pytest_multiconn.servers import ProtocolServer, RedisProtocol
from pytest_multiconn.suite import run_checks


def test_pipelined_commands_with_partial_sends_and_a_half_close() -> None:
    with ProtocolServer(RedisProtocol) as server:
        results = MultiConnClient(server.address, 8, exchange=RESP(), requests=30,
                                  faults=[PartialSend(max_chunk=3), HalfClose()], seed=2).run()
        results.check()


def test_the_suite_rows_that_matter_for_a_cache() -> None:
    with ProtocolServer(RedisProtocol) as server:
        report = run_checks(server.address, RESP(), seed=2,
                            only=["exchange", "pipelining", "never_read", "garbage", "reset"])
    assert report.ok, report.table()
