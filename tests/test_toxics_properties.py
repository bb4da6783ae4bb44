"""Properties of the content-preserving toxics, over chunkings and timings Hypothesis draws.

The toxics run as a pipeline of stages on test_toxics.py's fake loop and clock: chunks arrive
when the test feeds them and time passes only when it advances the clock, so each example is
deterministic (no sockets, no sleeping).  What is checked:

* ``Latency``, ``Slicer``, ``Coalesce`` and ``Bandwidth``, in any order, deliver the stream
  unchanged;
* with a ``Substitute`` after them, the output is ``re.sub(pattern, replacement, stream)``
  whenever the module's promise applies: every match is at most ``max_match`` bytes, and
  its first and last bytes reached the ``Substitute`` less than ``hold_ms`` apart.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_multiconn.faults.toxics import bandwidth, latency, slicer, substitute
from pytest_multiconn.faults.toxics import base as toxics_base
from pytest_multiconn.proxy import Bandwidth, Coalesce, Latency, Slicer, Substitute, Toxic
from test_toxics import Bench, FakeClock

HOLD_MS = 20.0
MAX_MATCH = 8

PIECES = [b"a", b"b", b"x", b"C", b"O", b"M", b"I", b"T", b"CO", b"COM", b"MIT", b"COMMIT",
          b"aab"]
PATTERNS = [rb"COMMIT", rb"a+b", rb"CO|COMMIT", rb"OMM|MIT", rb"ab"]
REPLACEMENTS = [b"", b"Z", rb"<\g<0>>", b"LONGER-THAN-THE-MATCH"]

preserving = st.one_of(
    st.builds(Latency, ms=st.sampled_from([0.0, 1.0, 7.0, 30.0]),
              jitter=st.sampled_from([0.0, 0.5])),
    st.builds(Slicer, average_size=st.integers(2, 5), size_variation=st.just(1),
              delay_us=st.sampled_from([0.0, 3000.0, 15000.0])),
    st.builds(Coalesce, bytes=st.integers(1, 12), timeout_ms=st.sampled_from([1.0, 10.0])),
    st.builds(Bandwidth, bytes_per_second=st.sampled_from([500, 5000])),
)


class Recorder:
    """A link that notes when each byte reached the next stage (the Substitute)."""

    def __init__(self, clock: FakeClock, nxt: object) -> None:
        self.clock = clock
        self.next = nxt
        self.times: list[float] = []

    def feed(self, data: bytes) -> None:
        self.times += [self.clock.now] * len(data)
        self.next.feed(data)  # type: ignore[attr-defined]

    def feed_eof(self) -> None:
        self.next.feed_eof()  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def clocked() -> object:
    """The toxics' modules read the fake clock (module-scoped: Hypothesis runs many examples
    in one test call, and each builds its own Bench on this clock)."""
    clock = FakeClock()
    mp = pytest.MonkeyPatch()
    for module in (toxics_base, latency, bandwidth, slicer, substitute):
        mp.setattr(module, "time", clock, raising=False)
    yield clock
    mp.undo()


def run(clock: FakeClock, toxics: list[Toxic], chunks: list[tuple[bytes, float]],
        last: Toxic | None) -> tuple[bytes, Recorder, Bench]:
    """Feed ``chunks`` (bytes, then ms to wait) through ``toxics`` then ``last``."""
    bench = Bench(clock)
    stages = [bench.stage(t, seed=i + 1) for i, t in enumerate(toxics)]
    tail = bench.stage(last) if last is not None else bench.sink
    recorder = Recorder(clock, tail)
    links = [*stages, recorder]
    for stage, nxt in zip(stages, links[1:], strict=True):
        stage.next = nxt  # type: ignore[assignment]
    head = links[0]
    for data, wait_ms in chunks:
        head.feed(data)
        bench.loop.advance(wait_ms / 1e3)
    head.feed_eof()
    bench.loop.advance(60.0)  # everything delayed has gone on by now
    assert bench.sink.eof
    assert bench.loop.pending() == []
    return bench.sink.data, recorder, bench


chunkings = st.lists(
    st.tuples(st.lists(st.sampled_from(PIECES), min_size=1, max_size=4).map(b"".join),
              st.sampled_from([0.0, 1.0, 5.0, 12.0, 19.0, 25.0, 40.0])),
    max_size=12,
)


@settings(max_examples=150, deadline=None)
@given(toxics=st.lists(preserving, max_size=3), chunks=chunkings)
def test_content_preserving_toxics_deliver_the_stream_unchanged(clocked, toxics, chunks):
    out, _, _ = run(clocked, toxics, chunks, None)
    assert out == b"".join(d for d, _ in chunks)


@settings(max_examples=300, deadline=None)
@given(toxics=st.lists(preserving, max_size=2), chunks=chunkings,
       pattern=st.sampled_from(PATTERNS), replacement=st.sampled_from(REPLACEMENTS))
def test_substitute_after_content_preserving_toxics_equals_re_sub(
    clocked, toxics, chunks, pattern, replacement
):
    stream = b"".join(d for d, _ in chunks)
    toxic = Substitute(pattern=pattern, replacement=replacement, max_match=MAX_MATCH,
                       hold_ms=HOLD_MS)
    out, recorder, _ = run(clocked, toxics, chunks, toxic)
    times = recorder.times
    assert len(times) == len(stream)
    promised = all(
        m.end() - m.start() <= MAX_MATCH
        and times[m.end() - 1] - times[m.start()] < HOLD_MS / 1e3
        for m in re.finditer(pattern, stream)
    )
    if promised:
        assert out == re.sub(pattern, replacement, stream), (times, chunks)


def test_the_reported_case_is_in_the_property(clocked):
    # CO, xCO, MMIT 12 ms apart under hold_ms=20: the COMMIT's parts came 12 ms apart.
    chunks = [(b"CO", 12.0), (b"xCO", 12.0), (b"MMIT", 0.0)]
    toxic = Substitute(pattern=rb"COMMIT", replacement=b"X", hold_ms=HOLD_MS)
    out, _, _ = run(clocked, [], chunks, toxic)
    assert out == b"COxX"
