"""Command-line flags and ini keys that share one name, one help text and one validator.

Every value is checked once, at start-up (``pytest_configure``): a bad ``--multiconn-timeout``
or ``multiconn_timeout = abc`` in an ini file is a usage error (exit status 4) that names the
option and the value, not a failure of each test that happens to read it.

Ini keys are registered with pytest's typed ``int``/``float`` ini types where pytest has them
(8.4 and later), so pytest 9's native ``[tool.pytest]`` TOML table takes ``multiconn_seed = 42``
as written; older pytest registers them as strings and the validator converts them.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

GROUP = "multiconn"
GROUP_DESCRIPTION = "pytest-multiconn: servers, clients and proxies that misbehave on demand"

#: The marker that configures ``multiconn_server`` (and the TLS server fixtures).
SERVER_MARKER = "multiconn_server"

#: pytest 8.4 added the ``int`` and ``float`` ini types; before it only strings exist.
TYPED_INI = tuple(int(p) for p in pytest.__version__.split(".")[:2]) >= (8, 4)

#: epoll's limit on one wait is about 24.8 days (2**31 - 1 ms); a bound past it would kill
#: the loop thread with OverflowError instead of bounding anything.
MAX_TIMEOUT = (2**31 - 1) / 1000

Validator = Callable[[Any], Any]


@dataclass(frozen=True)
class _Option:
    dest: str
    flag: str
    validate: Validator | None
    default: Any


_OPTIONS: dict[str, _Option] = {}
_RESOLVED = pytest.StashKey[dict[str, Any]]()


def positive_timeout(value: Any) -> float:
    """A bound in seconds: a finite number greater than 0 (and within epoll's limit)."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number of seconds, got {value!r}") from None
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT):
        raise ValueError(
            f"expected a positive, finite number of seconds (at most {MAX_TIMEOUT:.0f}), "
            f"got {value!r}"
        )
    return seconds


def seed_value(value: Any) -> int:
    """A run seed: a non-negative integer."""
    if isinstance(value, bool):
        raise ValueError(f"a seed is a non-negative integer, got {value!r}")
    if isinstance(value, int):
        seed = value
    else:
        text = str(value).strip()
        if not text.isascii() or not text.lstrip("-").isdigit():
            raise ValueError(f"a seed is a non-negative integer, got {value!r}")
        seed = int(text)
    if seed < 0:
        raise ValueError(f"a seed is a non-negative integer, got {value!r}")
    return seed


def _argparse_type(validate: Validator, flag: str) -> Callable[[str], Any]:
    """``validate`` for argparse: its message, not argparse's "invalid <function> value"."""

    def convert(text: str) -> Any:
        try:
            return validate(text)
        except (TypeError, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    # argparse names the type in some messages ("invalid X value"); name the option instead.
    convert.__name__ = flag
    return convert


def register_option(
    parser: pytest.Parser,
    name: str,
    *,
    help: str,
    type: Validator | None = None,
    ini_type: str = "string",
    default: Any = None,
    default_text: str | None = None,
    action: str | None = None,
) -> None:
    """Add ``--multiconn-NAME`` and ini key ``multiconn_NAME`` with the same help text.

    The command line wins over the ini file, which wins over ``default``.  ``type`` validates
    and converts a value from either (a ``str`` from the command line or an ini file, or what a
    native TOML table holds) and raises ``ValueError`` with a message for the user.
    ``ini_type`` (``"int"``/``"float"``) is used where pytest supports it.  ``default_text``
    is what ``--help`` shows as the default.
    """
    dest = f"multiconn_{name.replace('-', '_')}"
    flag = f"--multiconn-{name}"
    group = parser.getgroup(GROUP, GROUP_DESCRIPTION)
    if default_text is not None:
        shown = default_text
    else:
        shown = "not set" if default is None else str(default)
    text = f"{help} (default: {shown})" if action is None else help
    kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": text}
    if action is not None:
        kwargs["action"] = action
    elif type is not None:
        kwargs["type"] = _argparse_type(type, flag)
    group.addoption(flag, **kwargs)
    if action == "store_true":
        parser.addini(dest, text, type="bool", default=default)
    elif ini_type in ("int", "float") and TYPED_INI:
        parser.addini(dest, text, type=ini_type, default=None)  # type: ignore[arg-type]
    else:
        parser.addini(dest, text, type="string", default=None)
    _OPTIONS[dest] = _Option(dest, flag, type, default)


def _resolve(config: pytest.Config, option: _Option) -> Any:
    value = config.getoption(option.dest, default=None)
    if value is not None and value is not False:
        return value  # already validated by argparse
    try:
        ini = config.getini(option.dest)
    except (pytest.UsageError, TypeError, ValueError) as exc:
        # pytest's typed ini keys raise on a value of the wrong type; say which key it was.
        raise pytest.UsageError(f"ini key {option.dest} is invalid: {exc}") from None
    if ini in (None, "", []):
        return option.default
    if option.validate is None or isinstance(ini, bool):
        return ini
    try:
        return option.validate(ini)
    except (TypeError, ValueError) as exc:
        raise pytest.UsageError(f"ini key {option.dest} = {ini!r} is invalid: {exc}") from None


def validate_options(config: pytest.Config) -> dict[str, Any]:
    """Resolve and check every option once; a bad value raises :class:`pytest.UsageError`."""
    resolved = config.stash.get(_RESOLVED, None)
    if resolved is None:
        # Only the options this config's parser registered (an inner pytester run may load
        # fewer of our sub-plugins than the process has ever seen).
        resolved = {
            dest: _resolve(config, option)
            for dest, option in _OPTIONS.items()
            if hasattr(config.option, dest)
        }
        config.stash[_RESOLVED] = resolved
    return resolved


def get_option(config: pytest.Config, name: str) -> Any:
    """The effective value of option ``name``: command line, then ini, then default."""
    dest = f"multiconn_{name.replace('-', '_')}"
    resolved = validate_options(config)
    if dest in resolved:
        return resolved[dest]
    option = _OPTIONS.get(dest)
    return None if option is None else option.default
