"""``TrainConfig``: every hyper-parameter of a training run, each recorded in the model card.

Kept apart from the training code so the ``guardrail`` command can show the defaults in
``train --help`` without importing the training machinery at every start.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from guardrail._scoring.model import PACKAGED_ENCODER


class TrainConfig(BaseModel):
    """Hyper-parameters of a training run; all of them go into the model card."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_id: str = "value-guardrail-minilm-head"
    encoder: str = PACKAGED_ENCODER
    layers: list[int] = Field(default=[-3, -2, -1])
    hidden: int = 256
    max_length: int = 256
    prompt_tokens: int = 64
    window_overlap: int = 64
    seed: int = 0
    epochs: int = 20
    lr: float = 3e-3
    weight_decay: float = 1e-3
    dropout: float = 0.1
    batch_size: int = 256
    opposed_weight: float = Field(
        default=3.0, description="Loss weight of targets below -0.3 (rare, and what matters most)."
    )
    adapter_rank: int = Field(
        default=16, ge=0, description="LoRA rank for fine-tuning the encoder (0: frozen encoder, head only)."
    )
    adapter_alpha: float = 32.0
    adapter_targets: list[str] = Field(default=["query", "key", "value", "dense"])
    finetune_epochs: int = 2
    finetune_lr: float = 1e-3
    finetune_head_lr: float = 1e-3
    finetune_batch_size: int = 16
    prompt_dropout: float = Field(
        default=0.3,
        ge=0,
        le=1,
        description="Share of fine-tuning examples shown without their prompt, so the response itself is judged.",
    )
    touche: bool = Field(default=True, description="Add Touché23 training arguments as extra signal.")
    touche_weight: float = Field(default=0.5, description="Loss weight of Touché23 examples.")
    written: bool = Field(
        default=True,
        description="Add the project's own labelled examples (guardrail/data/written_*.jsonl): everyday "
        "instructions and casual harm, which FULCRA's refusal-heavy answers barely cover.",
    )
    written_weight: float = Field(default=3.0, description="Loss weight of the project's own examples.")
    written_mix: bool = Field(
        default=True,
        description="With written: also train on two-part answers built from them (a benign answer, then "
        "the example), so harm that comes late in a long answer still counts.",
    )
    benign_weight: float = Field(
        default=3.0,
        description="Loss weight of answers to everyday prompts (FULCRA safety_issues empty): rare next to "
        "refusals, they teach that helpful instructions are not harmful compliance.",
    )
    harm: bool = Field(
        default=True,
        description="Add the human-labelled harm data (harm/*.jsonl, train rows): a harmful answer must "
        "oppose some safety value (its lowest safety score below -0.3 - harm_margin), a harmless one none "
        "(every safety score, window and spans, above -0.3 + harm_margin).",
    )
    harm_weight: float = Field(
        default=1.0, ge=0, description="Weight of the harm hinge loss next to the value regression."
    )
    harm_margin: float = Field(default=0.2, ge=0, le=0.7, description="Margin of the harm hinge around -0.3.")
    harm_validation: float = Field(
        default=0.1,
        ge=0,
        lt=0.5,
        description="Share of harm training prompts held out of training (validation rule): the floors "
        "are calibrated, and runs compared, on them.",
    )
    harm_mix: int = Field(
        default=1000,
        ge=0,
        description="Two-part answers built from harm training rows (harmless lead, then a short answer), "
        "this many ending in harm and as many ending harmless: trains spans to catch a late harmful sentence.",
    )
    epoch_shares: dict[str, float] = Field(
        default={"touche": 0.2, "gptfuzz": 0.2, "diasafety": 0.34, "mix": 0.5},
        description="Share of a source (touche, a harm file, mix) drawn afresh in each fine-tuning epoch; "
        "others: all. Large or repetitive sources cost less, and still show every row over the epochs.",
    )
    span_tokens: int = Field(default=32, ge=0, description="Tokens per scored span (0: window only).")
    span_stride: int = Field(default=16, ge=0, description="Tokens between span starts.")
    clean_pass_rate: float = Field(
        default=0.98, description="Share of clean FULCRA training answers the calibrated floors must pass."
    )
    harmless_block_rate: float = Field(
        default=0.05,
        ge=0,
        lt=1,
        description="Most harm-data harmless answers (held-out training rows) the calibrated floors may block.",
    )
    validation: float = Field(
        default=0.0,
        ge=0,
        lt=0.5,
        description="Share of FULCRA training prompts held out (by a fixed hash rule) to compare training runs; "
        "their metrics go into the card as validation_metrics. 0: train on the whole training split.",
    )
    device: str = "cpu"
    limit: int | None = Field(
        default=None, ge=8, description="Use only the first N training examples of each source (smoke runs)."
    )
    evaluate: bool = Field(default=True, description="Score the test split and put the metrics in the card.")
