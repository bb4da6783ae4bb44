"""Seams, not privates (issue 23): no object of ours reaches into another object's ``_private``
attributes, except the few listed here, each with its reason.

``tools/private_access.py`` finds them (``python tools/private_access.py`` lists them).  A new
one fails this test: give the other object a public method or property, or a narrow Protocol
(``PipeAPI``, ``LayerHost``), instead; only what cannot have one belongs in ``ALLOWED``.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent

#: (file under src/pytest_multiconn, the access as written) -> why it stays.  At most 15.
ALLOWED: dict[tuple[str, str], str] = {
    ("tls/stream.py", "self._obj._sslobj"): (
        "the stdlib SSLObject's C object: its Python wrapper methods cost one frame per "
        "record on the TLS hot path, and the stdlib offers no public handle"
    ),
    ("plugin/__init__.py", "hook._must_rewrite"): (
        "pytest's: it marks every package of a plugin's distribution for assertion rewriting "
        "and offers no public way to unmark one; rewritten, each of our modules is parsed and "
        "compiled at every import under PYTHONDONTWRITEBYTECODE=1 (issue 25)"
    ),
    ("plugin/client_faults.py", "metafunc._arg2fixturedefs"): (
        "pytest's: no public API gives a test's fixture definitions, and the fault catalogue "
        "is set as the fixture's params only when a test uses it (issue 25)"
    ),
}


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "private_access", ROOT / "tools" / "private_access.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("private_access", module)
    spec.loader.exec_module(module)
    return module


def test_no_cross_object_private_access_outside_the_allowance() -> None:
    found = _tool().accesses()
    new = sorted({(path, text) for path, _, text in found} - ALLOWED.keys())
    assert not new, (
        "cross-object private accesses (use a public method, property or Protocol instead, "
        "or add one to ALLOWED with its reason):\n"
        + "\n".join(f"  {path}:{line}: {text}" for path, line, text in found
                    if (path, text) in new)
    )


def test_the_allowance_is_small_reasoned_and_still_needed() -> None:
    assert len(ALLOWED) <= 15  # the bound
    assert all(reason.strip() for reason in ALLOWED.values())
    used = {(path, text) for path, _, text in _tool().accesses()}
    stale = sorted(ALLOWED.keys() - used)
    assert not stale, f"ALLOWED lists accesses that are gone (remove them): {stale}"


def test_the_tool_sees_an_access_across_objects(tmp_path: Path) -> None:
    # The tool itself: other._x and self.other._x count; self._x, cls._x, super()._x and a
    # standard-library module's _x do not.
    (tmp_path / "mod.py").write_text(
        "import sys\n"
        "class A:\n"
        "    def f(self, other):\n"
        "        self._own = cls_ok = sys._getframe\n"
        "        super()._hook()\n"
        "        return other._theirs, self.peer._state\n",
        encoding="utf-8",
    )
    found = _tool().accesses(tmp_path)
    assert [(path, text) for path, _, text in found] == [
        ("mod.py", "other._theirs"),
        ("mod.py", "self.peer._state"),
    ]
