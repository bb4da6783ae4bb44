"""The one validation path (core/checks.py): every check names the parameter and the value."""

from __future__ import annotations

import math

import pytest

from pytest_multiconn.core.checks import (
    MAX_SEED,
    check_bool,
    check_count,
    check_items,
    check_number,
    check_seconds,
    check_seed,
)


@pytest.mark.parametrize("value", [0, 1, 2**32, MAX_SEED])
def test_check_seed_accepts_ints_in_range(value: int) -> None:
    assert check_seed(value) == value


@pytest.mark.parametrize("value", [True, False, -1, MAX_SEED + 1, 1.0, "7", None, math.nan])
def test_check_seed_refuses_and_names_parameter_and_value(value: object) -> None:
    with pytest.raises(ValueError, match=r"^my_seed must be an integer from 0") as info:
        check_seed(value, "my_seed")
    assert repr(value) in str(info.value)


def test_check_seed_optional_takes_none_as_the_run_seed() -> None:
    assert check_seed(None, optional=True) is None
    with pytest.raises(ValueError, match=r"or None \(the run seed\), got -2"):
        check_seed(-2, optional=True)


@pytest.mark.parametrize("value", [0, 1, "yes", None, 1.0])
def test_check_bool_refuses_non_bools(value: object) -> None:
    with pytest.raises(TypeError, match=rf"^pipeline must be True or False, got {value!r}"):
        check_bool(value, "pipeline")
    assert check_bool(True, "pipeline") is True


@pytest.mark.parametrize("value", [math.inf, math.nan, -1, 0, "1", True])
def test_check_seconds_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"^timeout must be a positive"):
        check_seconds(value, "timeout")


@pytest.mark.parametrize("value", [True, -1, 1.5, "3"])
def test_check_count_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"^count must be an integer >= 0"):
        check_count(value, "count")


def test_check_items_refuses_a_str_for_a_list() -> None:
    with pytest.raises(TypeError, match=r"^hosts must be an iterable of host names"):
        check_items("localhost", "hosts", str, "host names")
    assert check_items(["a", "b"], "hosts", str, "host names") == ("a", "b")


@pytest.mark.parametrize("value", [0, -0.5, 64.5, math.inf, math.nan, True, "0.5"])
def test_check_number_refuses_outside_its_range(value: object) -> None:
    with pytest.raises(ValueError, match=r"^share must be a share, got "):
        check_number(value, "share", above=0, at_most=64, what="a share")
    assert check_number(64, "share", above=0, at_most=64, what="a share") == 64.0
