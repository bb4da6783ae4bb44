"""Every Python example in README.md and docs/ runs as written.

Examples that define ``test_*`` functions are pytest tests: they run in a throw-away project
with only our plugin loaded (``pytester``, plugin autoload off, so the outer run's plugins do not
leak in).  The others are scripts and run as modules through pytest-examples.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pytest_examples import CodeExample, EvalExample, find_examples

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "README.md", ROOT / "docs"]

#: A block fenced ``python3`` (highlighted the same) is shown, not run: an example that needs
#: the reader's own server (their redis); tests/test_client_suite.py runs the same code
#: against a real one.
EXAMPLES = [ex for ex in find_examples(*SOURCES) if ex.prefix.split()[:1] in (["py"], ["python"])]


def _is_pytest_example(example: CodeExample) -> bool:
    return "\ndef test_" in "\n" + example.source or "\nasync def test_" in "\n" + example.source


def _example_id(example: CodeExample) -> str:
    return f"{example.path.relative_to(ROOT)}:{example.start_line}"


def test_examples_were_found() -> None:
    paths = {ex.path.name for ex in EXAMPLES}
    assert "README.md" in paths
    assert len(EXAMPLES) >= 8, [str(ex) for ex in EXAMPLES]


@pytest.mark.parametrize("example", EXAMPLES, ids=_example_id)
def test_example_runs(
    example: CodeExample,
    eval_example: EvalExample,
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if not _is_pytest_example(example):
        eval_example.run(example)
        return
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makepyfile(test_example=example.source)
    result = pytester.runpytest_subprocess("-p", "pytest_multiconn.plugin", "-q")
    assert result.ret == 0, result.stdout.str() + result.stderr.str()
    outcomes = result.parseoutcomes()
    assert outcomes.get("passed", 0) >= 1, outcomes
    assert not outcomes.get("failed"), outcomes
