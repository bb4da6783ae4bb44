"""List every place in src/ that reaches into another object's ``_private`` attribute.

``self._x`` and ``cls._x`` are an object's own state; ``super()._x`` is a subclass calling its
own base class; ``module._x`` of a standard-library module is that module's business.
Everything else (``other._x``, ``self.server._x``) is a cross-object access, which
ARCHITECTURE.md says goes through a seam (a Protocol or a public method) instead.
``tests/test_seams.py`` keeps the count at or under its allowance, each one with a reason.

Usage: ``python tools/private_access.py [--all]`` prints the count and the places.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "src" / "pytest_multiconn"

#: Standard-library modules whose private names we use knowingly (and that are not objects of
#: ours): reaching into them is a different question from our own seams.
_STDLIB = frozenset({
    "os", "sys", "socket", "ssl", "select", "selectors", "typing", "threading", "collections",
    "dataclasses", "struct", "errno", "warnings", "signal", "resource", "time", "functools",
    "io", "json", "itertools", "_thread",
})  # fmt: skip


def _is_own(value: ast.expr) -> bool:
    if isinstance(value, ast.Name):
        return value.id in {"self", "cls"} or value.id in _STDLIB
    # super()._x: a subclass using its own base's hook.
    return (
        isinstance(value, ast.Call)
        and isinstance(value.func, ast.Name)
        and value.func.id == "super"
    )


def accesses(root: Path = ROOT) -> list[tuple[str, int, str]]:
    """Every cross-object private access as ``(path relative to the package, line, text)``."""
    found: list[tuple[str, int, str]] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not _is_own(node.value)
            ):
                found.append((path.relative_to(root).as_posix(), node.lineno, ast.unparse(node)))
    return sorted(found)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    found = accesses()
    print(f"{len(found)} cross-object private accesses")
    by_file: dict[str, list[str]] = {}
    for path, line, text in found:
        by_file.setdefault(path, []).append(f"{line}:{text}")
    for path, items in sorted(by_file.items(), key=lambda kv: -len(kv[1])):
        shown = items if "--all" in args else items[:8]
        print(f"{len(items):3} {path}: {', '.join(shown)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
