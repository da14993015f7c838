"""The public surface: ``__all__`` is sorted and complete, and ``import guardrail`` stays light."""

from __future__ import annotations

import subprocess
import sys
from types import ModuleType

import guardrail


def _isort_key(name: str) -> tuple[int, str]:
    # The order ruff's RUF022 keeps: CONSTANTS, then Classes, then everything else.
    group = 0 if name.isupper() else 1 if name[:1].isupper() else 2
    return group, name


def test_all_is_sorted() -> None:
    assert guardrail.__all__ == sorted(guardrail.__all__, key=_isort_key)


def test_all_has_no_duplicates() -> None:
    assert len(set(guardrail.__all__)) == len(guardrail.__all__)


_NOT_EXPORTED = {"annotations", "TYPE_CHECKING", "Any"}  # names the module itself uses


def test_all_is_complete() -> None:
    public = {
        name
        for name, value in vars(guardrail).items()
        if not name.startswith("_") and name not in _NOT_EXPORTED and not isinstance(value, ModuleType)
    }
    # TransformerScorer is served lazily by __getattr__, so it is not in the module dict.
    assert public | {"TransformerScorer", "__version__"} == set(guardrail.__all__)


def test_unknown_attribute_raises() -> None:
    try:
        guardrail.NoSuchThing  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


_PROBE = """
import sys
import guardrail
for name in guardrail.__all__:
    if name != "TransformerScorer":
        getattr(guardrail, name)
heavy = sorted(m for m in ("torch", "transformers", "typer", "litellm", "langchain_core") if m in sys.modules)
print(",".join(heavy))
"""


def test_import_does_not_load_heavy_packages() -> None:
    result = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == ""


_IMPORT_ALL = """
import guardrail
for name in guardrail.__all__:
    getattr(guardrail, name)
print("ok")
"""


def test_every_name_in_all_is_importable() -> None:
    # In a subprocess: TransformerScorer imports torch, which this test session need not pay for.
    result = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True, check=True, timeout=300
    )
    assert result.stdout.strip() == "ok"
