"""Give re-exported names the module path users import them from.

A class defined in ``pytest_multiconn.faults.client`` and re-exported by the public namespace
``pytest_multiconn.faults`` should say ``pytest_multiconn.faults.PartialSend`` in reprs,
tracebacks, pickles and the API reference, so its ``__module__`` is rewritten to the namespace
(trio does the same).  Only objects defined inside this package are touched.
"""

from __future__ import annotations

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
