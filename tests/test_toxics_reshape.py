"""The corruption and reshaping toxics (corrupt, substitute, coalesce, truncate), driven
through the public ``Stage`` / ``PipeAPI`` with test_toxics.py's fake pipe and clock (the
wire behaviour through a real proxy is in test_proxy_reshape.py)."""

from __future__ import annotations

import math
import re
from random import Random

import pytest

from pytest_multiconn.errors import FaultParameterError
from pytest_multiconn.faults import fault_rng
from pytest_multiconn.faults.toxics import base as toxics_base
from pytest_multiconn.faults.toxics import slicer as slicer_module
from pytest_multiconn.faults.toxics import substitute as substitute_module
from pytest_multiconn.faults.toxics.corrupt import flips
from pytest_multiconn.proxy import Coalesce, Corrupt, Slicer, Substitute, Truncate
from test_toxics import Bench, FakeClock

SEED = 1  # Bench.stage's seed; its rng is fault_rng(seed, "toxic", 1, "downstream", name)


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Bench:
    clock = FakeClock()
    for module in (toxics_base, slicer_module, substitute_module):  # the ones reading a clock
        if hasattr(module, "time"):
            monkeypatch.setattr(module, "time", clock)
    return Bench(clock)


def _rng(name: str, seed: int = SEED) -> Random:
    return fault_rng(seed, "toxic", 1, "downstream", name)


def _predicted_rate_flips(seed: int, rate: float, length: int) -> dict[int, int]:
    """The documented draw order of rate mode, written out independently of the toxic."""
    rng, flipped, position = _rng("corrupt", seed), {}, 0
    while True:
        position += int(math.log(1.0 - rng.random()) / math.log(1.0 - rate))
        bit = rng.randrange(8)
        if position >= length:
            return flipped
        flipped[position] = bit
        position += 1


def _diff(sent: bytes, got: bytes) -> dict[int, int]:
    assert len(sent) == len(got)
    return {i: (a ^ b).bit_length() - 1 for i, (a, b) in enumerate(zip(sent, got, strict=True))
            if a != b}


# -- corrupt ------------------------------------------------------------------------------------
def test_corrupt_offsets_flip_one_seeded_bit_at_each_offset_across_pieces(bench: Bench) -> None:
    stage = bench.stage(Corrupt(offsets=(0, 5, 6, 19)))
    payload = bytes(range(100, 124))
    for piece in (payload[:3], payload[3:6], payload[6:7], payload[7:]):  # offsets cross pieces
        stage.feed(piece)
    rng = _rng("corrupt")
    expected = {offset: rng.randrange(8) for offset in (0, 5, 6, 19)}
    assert _diff(payload, bench.sink.data) == expected
    assert len(bench.pipe.notes) == 4  # one per piece that had a flip
    assert bench.pipe.notes[0] == f"flipped 1 bit(s) at offset:bit 0:{expected[0]}"


def test_corrupt_rate_matches_the_documented_draws_and_replays(bench: Bench) -> None:
    payload = bytes(20_000)

    def run(seed: int, pieces: int) -> bytes:
        b = Bench(bench.clock)
        stage = b.stage(Corrupt(rate=0.01), seed=seed)
        step = len(payload) // pieces
        for i in range(0, len(payload), step):
            stage.feed(payload[i : i + step])
        return b.sink.data

    first = run(7, 1)
    assert _diff(payload, first) == _predicted_rate_flips(7, 0.01, len(payload))
    assert run(7, 40) == first  # where the reads fall does not change the flips
    assert run(8, 1) != first
    # 20 000 bytes at 1 %: 200 expected, sd about 14; 6 sd either side cannot fail by chance.
    assert 115 <= len(_diff(payload, first)) <= 285


def test_corrupt_update_acts_from_the_next_byte(bench: Bench) -> None:
    stage = bench.stage(Corrupt(offsets=(1,)))
    stage.feed(bytes(4))
    stage.toxic = stage.toxic.replace(offsets=(2, 6))  # 2 has passed: only 6 is flipped
    stage.updated()
    stage.feed(bytes(4))
    assert sorted(_diff(bytes(8), bench.sink.data)) == [1, 6]


def test_corrupt_rate_one_flips_every_byte(bench: Bench) -> None:
    stage = bench.stage(Corrupt(rate=1.0))
    stage.feed(bytes(50))
    assert all(bin(b).count("1") == 1 for b in bench.sink.data)


def test_flips_is_the_sequence_the_stage_uses(bench: Bench) -> None:
    stage = bench.stage(Corrupt(offsets=(3, 9)))
    stage.feed(bytes(12))
    assert list(flips(Corrupt(offsets=(3, 9)), _rng("corrupt"))) == \
        sorted(_diff(bytes(12), bench.sink.data).items())


@pytest.mark.parametrize(("params", "message"), [
    ({}, "needs rate > 0"),
    ({"rate": 0.1, "offsets": (1,)}, "rate or offsets, not both"),
    ({"rate": 1.5}, "Corrupt: rate must be a finite number from 0 to 1, got 1.5"),
    ({"offsets": (1, 1)}, "distinct"),
    ({"offsets": (-1,)}, "integers >= 0"),
    ({"offsets": [1]}, "a tuple"),
])
def test_corrupt_refuses_bad_parameters(params: dict[str, object], message: str) -> None:
    with pytest.raises(FaultParameterError, match=re.escape(message)):
        Corrupt(**params)  # type: ignore[arg-type]


def test_corrupt_stores_offsets_sorted() -> None:
    assert Corrupt(offsets=(9, 2)).offsets == (2, 9)


# -- substitute -----------------------------------------------------------------------------------
def test_substitute_replaces_a_match_split_over_two_reads(bench: Bench) -> None:
    stage = bench.stage(Substitute(pattern=rb"COMMIT", replacement=b"ROLLBACK", max_match=8))
    stage.feed(b"BEGIN; COM")
    stage.feed(b"MIT; SELECT 1;")
    stage.feed_eof()
    assert bench.sink.data == b"BEGIN; ROLLBACK; SELECT 1;"
    assert bench.sink.eof
    assert bench.pipe.notes == ["replaced 1 match(es) of b'COMMIT' at offset 7"]
    assert bench.pipe.dropped_bytes == len("COMMIT") - len("ROLLBACK")  # in-flight count kept


def test_substitute_holds_back_at_most_max_match_minus_one_bytes(bench: Bench) -> None:
    stage = bench.stage(Substitute(pattern=rb"zz", replacement=b"", max_match=10))
    stage.feed(b"a" * 100)
    assert bench.sink.data == b"a" * 91
    stage.feed(b"b")
    assert bench.sink.data == b"a" * 92


def test_substitute_decides_a_short_tail_after_hold_ms(bench: Bench) -> None:
    stage = bench.stage(Substitute(pattern=rb"GET /slow", replacement=b"GET /fast", hold_ms=20))
    stage.feed(b"GET /slow\r\n")  # shorter than max_match (64): held
    assert bench.sink.items == []
    bench.loop.advance(0.019)
    assert bench.sink.items == []
    bench.loop.advance(0.001)
    assert bench.sink.data == b"GET /fast\r\n"
    assert bench.loop.pending() == []


def test_substitute_hold_counts_from_each_candidate_not_from_the_first_held_byte(
    bench: Bench,
) -> None:
    # "CO" cannot become COMMIT once "x" follows, but the "CO" after it can: its parts
    # arrive 12 ms apart, under hold_ms, so it is replaced although the first "CO" waited
    # 24 ms in all.
    stage = bench.stage(Substitute(pattern=rb"COMMIT", replacement=b"X", hold_ms=20))
    stage.feed(b"CO")
    bench.loop.advance(0.012)
    stage.feed(b"xCO")
    bench.loop.advance(0.012)
    stage.feed(b"MMIT")
    assert bench.sink.data == b"CO"  # the first "CO" was decided at 20 ms
    bench.loop.advance(0.008)  # 20 ms after "xCO" came
    assert bench.sink.data == b"COxX"
    stage.feed_eof()
    assert bench.sink.data == b"COxX"
    assert bench.loop.pending() == []


def test_substitute_holds_a_byte_at_most_hold_ms_from_its_arrival(bench: Bench) -> None:
    stage = bench.stage(Substitute(pattern=rb"COMMIT", replacement=b"X", hold_ms=20))
    start = bench.clock.now
    stage.feed(b"ab")
    bench.loop.advance(0.015)
    stage.feed(b"cd")
    bench.loop.advance(0.005)
    assert bench.sink.items == [(start + 0.020, b"ab")]
    bench.loop.advance(0.015)
    assert bench.sink.items[1:] == [(start + 0.035, b"cd")]
    assert bench.loop.pending() == []


def test_substitute_count_groups_and_pass_through_after_the_last(bench: Bench) -> None:
    stage = bench.stage(Substitute(pattern=rb"(\d+)px", replacement=rb"[\1]", count=2,
                                   max_match=8))
    stage.feed(b"1px 22px 333px 4px")
    stage.feed_eof()
    assert bench.sink.data == b"[1] [22] 333px 4px"


def test_substitute_equals_re_sub_for_any_split_of_the_stream(bench: Bench) -> None:
    # The boundary rule's promise, over 100 seeded random splits: bounded matches are found
    # wherever the reads fall, greedy ones included.
    text = b"ab aab xaaaab COMMIT abab aaaaaaab " * 6
    pattern, replacement = rb"a+b|COMMIT", b"<\\g<0>>"
    expected = re.sub(pattern, replacement, text)
    split_rng = Random(1)
    for _ in range(100):
        b = Bench(bench.clock)
        stage = b.stage(Substitute(pattern=pattern, replacement=replacement, max_match=12))
        cuts = sorted(split_rng.sample(range(1, len(text)), split_rng.randint(0, 30)))
        for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True):
            stage.feed(text[start:end])
        stage.feed_eof()
        assert b.sink.data == expected, cuts


def test_substitute_detach_passes_what_it_held(bench: Bench) -> None:
    stage = bench.stage(Substitute(pattern=rb"x", replacement=b"y"))
    stage.feed(b"hello")
    stage.detach()
    assert bench.sink.data == b"hello"
    assert bench.loop.pending() == []


@pytest.mark.parametrize(("params", "message"), [
    ({"pattern": rb"a*"}, "cannot match nothing"),
    ({"pattern": rb"("}, "a valid regular expression"),
    ({"pattern": "COMMIT"}, "pattern must be bytes"),
    ({"pattern": rb"a", "replacement": "b"}, "replacement must be bytes"),
    ({"pattern": rb"(a)", "replacement": rb"\2"}, "not a valid template"),
    ({"pattern": rb"a", "max_match": 0}, "max_match must be an integer from 1"),
])
def test_substitute_refuses_bad_parameters(params: dict[str, object], message: str) -> None:
    with pytest.raises(FaultParameterError, match=re.escape(message)):
        Substitute(**params)  # type: ignore[arg-type]


# -- coalesce -----------------------------------------------------------------------------------
def test_coalesce_holds_small_writes_until_n_bytes(bench: Bench) -> None:
    stage = bench.stage(Coalesce(bytes=8, timeout_ms=50))
    for ch in b"abcdefg":
        stage.feed(bytes([ch]))
    assert bench.sink.items == []
    stage.feed(b"hij")
    assert bench.sink.items == [(bench.clock.now, b"abcdefghij")]
    assert bench.pipe.notes == ["coalesced 8 piece(s) (8 B reached)"]
    assert bench.loop.pending() == []


def test_coalesce_flushes_after_the_timeout_and_before_the_eof(bench: Bench) -> None:
    stage = bench.stage(Coalesce(bytes=100, timeout_ms=30))
    start = bench.clock.now
    stage.feed(b"ab")
    bench.loop.advance(0.020)
    stage.feed(b"cd")  # the wait counts from the first held byte
    bench.loop.advance(0.010)
    assert bench.sink.items == [(start + 0.030, b"abcd")]
    stage.feed(b"ef")
    stage.feed_eof()
    assert bench.sink.items[1:] == [(start + 0.030, b"ef"), (start + 0.030, None)]


# -- truncate -------------------------------------------------------------------------------------
def test_truncate_cuts_each_piece_and_keeps_the_connection(bench: Bench) -> None:
    stage = bench.stage(Truncate(bytes=3))
    stage.feed(b"first reply")
    stage.feed(b"ok")
    stage.feed(b"second reply")
    stage.feed_eof()
    assert [d for _, d in bench.sink.items] == [b"fir", b"ok", b"sec", None]
    assert bench.pipe.dropped_bytes == 8 + 9
    assert bench.pipe.flush_closes == bench.pipe.finished == []  # unlike limit_data
    assert bench.pipe.notes[0] == "piece 1 cut to 3 B, dropped 8 B"


def test_truncate_every_nth_piece_and_zero_bytes(bench: Bench) -> None:
    stage = bench.stage(Truncate(bytes=0, every=2))
    for piece in (b"one", b"two", b"three", b"four"):
        stage.feed(piece)
    assert bench.sink.data == b"onethree"


def test_truncate_after_a_slicer_cuts_the_slicer_pieces(bench: Bench) -> None:
    # The unit is "a piece this stage is fed": behind a slicer, each slice.
    slicer = bench.stage(Slicer(average_size=4))
    b = Bench(bench.clock)
    truncate = b.stage(Truncate(bytes=1))
    slicer.next = truncate
    slicer.feed(b"aaaabbbbcccc")
    assert b.sink.data == b"abc"
