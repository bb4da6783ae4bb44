"""One validation path: numbers, seeds and flags are checked by core/checks.py, not by inline
``isinstance(x, bool) or not isinstance(x, int)`` chains that each word their error (and
pick their exception type) differently (issue 23)."""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "src" / "pytest_multiconn"

#: The inline shape the checks replace: a bool refused before an int/float is accepted.
INLINE = re.compile(r"isinstance\(\s*[\w.\[\]]+\s*,\s*bool\s*\)\s+or\s+not\s+isinstance\(")

#: The module that owns the shape.
OWNER = PACKAGE / "core" / "checks.py"


def test_numbers_are_checked_in_one_place() -> None:
    found = [
        f"{path.relative_to(PACKAGE)}:{text.count(chr(10), 0, match.start()) + 1}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != OWNER
        for text in [path.read_text(encoding="utf-8")]
        for match in INLINE.finditer(text)
    ]
    assert not found, (
        "inline number checks outside core/checks.py (use check_count, check_seed, "
        f"check_number, check_seconds or check_bool): {found}"
    )


def test_the_pattern_finds_what_it_forbids() -> None:
    # The guard itself must be able to fail.
    assert INLINE.search("if isinstance(n, bool) or not isinstance(n, int) or n < 0:")
    assert INLINE.search("isinstance(self.size, bool) or not isinstance(self.size, int)")
    assert INLINE.search(OWNER.read_text(encoding="utf-8"))
