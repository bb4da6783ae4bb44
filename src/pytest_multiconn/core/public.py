"""Give re-exported names the module path users import them from.

A class defined in ``pytest_multiconn.faults.client`` and re-exported by the public namespace
``pytest_multiconn.faults`` should say ``pytest_multiconn.faults.PartialSend`` in reprs,
tracebacks, pickles and the API reference, so its ``__module__`` is rewritten to the namespace
(trio does the same).  Only objects defined inside this package are touched.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def publish(namespace: str, exported: dict[str, Any], names: list[str]) -> None:
    """Set ``__module__`` of each class and function in ``names`` to ``namespace``."""
    for name in names:
        obj = exported[name]
        module = getattr(obj, "__module__", None)
        if not isinstance(module, str) or not module.startswith("pytest_multiconn."):
            continue
        if isinstance(obj, type) or callable(obj):
            try:
                obj.__module__ = namespace
            except (AttributeError, TypeError):  # builtins and some C types refuse it
                continue


def lazy_import(namespace: str, lazy: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``namespace`` that imports each name of ``lazy`` from the
    module ``lazy[name]`` names on first use, and publishes it.

    Published, not cached: the defining module stays the one truth.  pytester restores
    ``sys.modules`` after each test (pytest-examples drops modules too), so a module first
    imported inside one is imported afresh by the next; a cached class would then be the old
    copy, and the new copy's checks (``isinstance(fault, ClientFault)``) would refuse what the
    old one made.
    """

    def __getattr__(name: str) -> Any:
        module = lazy.get(name)
        if module is None:
            raise AttributeError(f"module {namespace!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        publish(namespace, {name: value}, [name])
        return value

    return __getattr__
