"""The protocol examples in examples/ run as their own pytest session and pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    ("name", "tests"),
    [
        ("test_your_http_service.py", 2),
        ("test_your_redis_server.py", 2),
        ("test_your_line_protocol.py", 2),
        ("test_your_client.py", 2),
    ],
)
def test_example_passes(name: str, tests: int) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(EXAMPLES / name), "-q", "-p", "no:randomly",
         "-p", "no:cacheprovider", "-n", "0"],
        capture_output=True, text=True, timeout=300, check=False, cwd=EXAMPLES.parent,
    )
    # From the first failure on (its assertion message holds the suite's table), not only
    # the tail, which is the report section of the last failure.
    start = proc.stdout.find("= FAILURES =")
    assert proc.returncode == 0, proc.stdout[max(start, 0):][:12000] + proc.stderr[-2000:]
    assert f"{tests} passed" in proc.stdout
