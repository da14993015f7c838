"""Every example runs as its docstring says: ``.venv/bin/python examples/NAME.py`` from the repository root.

No environment is set beyond what a reader's shell has: the examples must work offline on their own.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("*.py"))
# What the test process sets for itself (conftest) and a reader's shell would not have.
_OURS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "LITELLM_LOCAL_MODEL_COST_MAP")


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_as_its_docstring_says(example: Path) -> None:
    docstring = ast.get_docstring(ast.parse(example.read_text(encoding="utf-8"))) or ""
    command = f".venv/bin/python examples/{example.name}"
    assert command in docstring, f"{example.name}: the docstring should say how to run it: {command}"
    env = {k: v for k, v in os.environ.items() if k not in _OURS}
    # sys.executable is the README's venv interpreter when the tests run as the README says.
    result = subprocess.run(
        [sys.executable, f"examples/{example.name}"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "block" in result.stdout  # each example shows the guard stopping something
