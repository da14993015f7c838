"""Shared session-scoped fixtures: the real data folder and the shipped default model."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# The shipped model must load from disk; never reach for the Hugging Face Hub in tests. litellm must
# read its bundled cost map rather than fetch one at import. Set here, before any test imports them,
# so the README's test command needs no environment.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

if TYPE_CHECKING:
    from guardrail import Guard
    from guardrail._scoring.scorer import TransformerScorer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared training/evaluation data: ``$GUARDRAIL_DATA`` or ``<repo>/../shared/data``.

    Fails (never skips) when it is missing: the data tests guard the published figures.
    """
    folder = Path(os.environ.get("GUARDRAIL_DATA") or REPO.parent / "shared" / "data")
    if not (folder / "fulcra").is_dir():
        pytest.fail(
            f"data folder {folder} not found (expected fulcra/ inside); "
            "set GUARDRAIL_DATA to the shared/data folder described in its README",
            pytrace=False,
        )
    return folder


@pytest.fixture(scope="session")
def scorer() -> TransformerScorer:
    """The shipped default model in PyTorch float32 (the reference runtime), loaded once per session."""
    from guardrail._scoring.scorer import TransformerScorer

    return TransformerScorer(runtime="torch")


@pytest.fixture(scope="module")
def guard(scorer: TransformerScorer) -> Guard:
    """A default-policy ``Guard`` on the session's real scorer (one per test module)."""
    from guardrail import Guard

    return Guard(scorer=scorer)


@pytest.fixture(scope="module")
def refusal(guard: Guard) -> str:
    """The default policy's block message: what a blocked answer delivers."""
    message = guard.policy.action("block").message
    assert message
    return message
