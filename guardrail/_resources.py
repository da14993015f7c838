"""Where the files shipped with the package live: policies and the default model.

In a wheel, ``policies/`` is packed inside the package as ``guardrail/policies``; in a source
checkout or editable install it is the top-level ``policies/`` beside the package. Beside each
policy lies its test file (``default_test.yaml``, run by ``guardrail policy test``), shipped too.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def policies_dir() -> Path:
    """Return the folder holding the shipped YAML policies."""
    for candidate in (_PACKAGE / "policies", _PACKAGE.parent / "policies"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"shipped policies not found under {_PACKAGE} or {_PACKAGE.parent}")


TEST_SUFFIX = "_test"
"""Stem ending of a policy test file (``default_test.yaml`` tests ``default.yaml``): never a policy itself."""


def policy_names(folder: Path) -> list[str]:
    """Return the names (file stems) of the policies in ``folder``, sorted, leaving out policy test files."""
    return sorted(p.stem for p in folder.glob("*.yaml") if not p.stem.endswith(TEST_SUFFIX))


def shipped_policy_names() -> list[str]:
    """Return the names of the shipped policies (file stems), sorted."""
    return policy_names(policies_dir())


def default_model_dir() -> Path:
    """Return the folder of the trained default model shipped inside the package."""
    return _PACKAGE / "models" / "default"
