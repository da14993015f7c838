"""Where the files shipped with the package live: policies and the default model.

In a wheel, ``policies/`` is packed inside the package as ``guardrail/policies``; in a source
checkout or editable install it is the top-level ``policies/`` beside the package.
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


def shipped_policy_names() -> list[str]:
    """Return the names of the shipped policies (file stems), sorted."""
    return sorted(p.stem for p in policies_dir().glob("*.yaml"))


def default_model_dir() -> Path:
    """Return the folder of the trained default model shipped inside the package."""
    return _PACKAGE / "models" / "default"
