"""argparse ``type=`` functions shared by every subcommand: a bad value is one line naming
it (exit 2), never a traceback, and each kind of value is checked one way everywhere."""

from __future__ import annotations

import argparse
import math


def seed(text: str) -> int:
    """A seed: a non-negative integer."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"a seed is a non-negative integer, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """A positive integer (a count, a pid)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _positive_finite(text: str, not_a_number: str, not_positive: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(not_a_number) from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(not_positive)
    return value


def positive_seconds(text: str) -> float:
    """A positive, finite number of seconds."""
    return _positive_finite(text, f"expected a number of seconds, got {text!r}",
                            f"expected a positive number of seconds, got {text!r}")


def positive_number(text: str) -> float:
    """A positive, finite number (a share of a CPU, MiB)."""
    wrong = f"expected a positive number, got {text!r}"
    return _positive_finite(text, wrong, wrong)
