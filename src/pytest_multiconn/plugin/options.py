"""Command-line flags and ini keys that share one name and one help text."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

GROUP = "multiconn"
GROUP_DESCRIPTION = "pytest-multiconn: servers, clients and proxies that misbehave on demand"

_types: dict[str, Callable[[str], Any]] = {}
_defaults: dict[str, Any] = {}


def register_option(
    parser: pytest.Parser,
    name: str,
    *,
    help: str,
    type: Callable[[str], Any] | None = None,
    default: Any = None,
    action: str | None = None,
) -> None:
    """Add ``--multiconn-NAME`` and ini key ``multiconn_NAME`` with the same help text.

    The command line wins over the ini file, which wins over ``default``.
    """
    dest = f"multiconn_{name.replace('-', '_')}"
    group = parser.getgroup(GROUP, GROUP_DESCRIPTION)
    text = f"{help} (default: {default})" if action is None else help
    kwargs: dict[str, Any] = {"dest": dest, "default": None, "help": text}
    if action is not None:
        kwargs["action"] = action
    elif type is not None:
        kwargs["type"] = type
    group.addoption(f"--multiconn-{name}", **kwargs)
    if action == "store_true":
        parser.addini(dest, text, type="bool", default=default)
    else:
        parser.addini(dest, text, type="string", default=None)
    if type is not None:
        _types[dest] = type
    _defaults[dest] = default


def get_option(config: pytest.Config, name: str) -> Any:
    """The effective value of option ``name``: command line, then ini, then default."""
    dest = f"multiconn_{name.replace('-', '_')}"
    value = config.getoption(dest, default=None)
    if value is not None and value is not False:
        return value
    ini = config.getini(dest)
    if ini not in (None, "", []):
        convert = _types.get(dest)
        if convert is None or isinstance(ini, bool):
            return ini
        try:
            return convert(str(ini))
        except (TypeError, ValueError) as exc:
            raise pytest.UsageError(f"ini key {dest} = {ini!r} is invalid: {exc}") from exc
    return _defaults.get(dest)
