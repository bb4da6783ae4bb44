"""Property tests: byte-exact echo under any seeded schedule of partial sends and pauses."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_multiconn import EchoServer, MultiConnClient
from pytest_multiconn.faults import PartialSend


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    max_chunk=st.integers(min_value=1, max_value=4),
    size=st.integers(min_value=1, max_value=300),
)
def test_partial_sends_with_random_pauses_echo_byte_exact(
    seed: int, max_chunk: int, size: int
) -> None:
    payload = os.urandom(size)
    fault = PartialSend(max_chunk=max_chunk, delay=0.0005)
    with EchoServer() as server:
        results = MultiConnClient(
            server.address, 3, [payload], faults=[fault], seed=seed, timeout=20
        ).run()
        results.check()
        stats = server.wait_for_closed(3)
    assert stats.bytes_in == stats.bytes_out == 3 * size
    for result in results:
        # The schedule really was partial: every send within the chunk bound, in many sends.
        assert result.send_sizes, "the fault did not act"
        assert max(result.send_sizes) <= max_chunk
        assert sum(result.send_sizes) == size
    # And it replays: the same seed gives the same chunk boundaries.
    with EchoServer() as server:
        again = MultiConnClient(server.address, 3, [payload], faults=[fault], seed=seed).run()
    assert [r.send_sizes for r in again] == [r.send_sizes for r in results]
