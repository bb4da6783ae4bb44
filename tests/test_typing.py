"""A user's test file annotated with our fixture types passes ``mypy --strict`` without casts,
and runs (issue 22, item 24): ``tests/typing/user_tests.py``."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

USER_TESTS = Path(__file__).parent / "typing" / "user_tests.py"


def test_user_tests_pass_mypy_strict(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    text = USER_TESTS.read_text()
    assert "cast(" not in text
    assert "Any" not in text
    assert "type: ignore" not in text
    done = subprocess.run(
        [
            sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
            "--cache-dir", str(tmp_path / "mypy-cache"), str(USER_TESTS),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_user_tests_run(pytester: pytest.Pytester) -> None:
    # The annotations say what the fixtures really give.
    pytest.importorskip("h11")  # multiconn_toxiproxy
    shutil.copy(USER_TESTS, pytester.path / "test_user.py")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q", "test_user.py")
    result.assert_outcomes(passed=8)
