"""``guardrail train``: fit the value head over a frozen encoder, calibrate, write a model directory.

Reproducible: seeded, single-threaded-order data, deterministic full-batch statistics; the card
records data file hashes, the split rule and every hyper-parameter.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from guardrail._data import (
    SPLIT_RULE,
    VALIDATION_RULE,
    Example,
    file_hashes,
    is_validation,
    load_evaluator,
    load_touche,
    load_trustworthy,
    load_written,
    mix_written,
)
from guardrail._evaluate import is_clean, is_harmful
from guardrail._model import PACKAGED_ENCODER, AdapterConfig, ModelConfig, write_json
from guardrail._values import NO_CONNECTION, SAFETY_VALUES, VALUES

Progress = Callable[[str], None]

_SAFETY_COLUMNS = [VALUES.index(v) for v in SAFETY_VALUES]
"""Column of each safety value in a score matrix, in SAFETY_VALUES order."""


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
    finetune_epochs: int = 4
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
    clean_pass_rate: float = Field(
        default=0.98, description="Share of clean training answers the calibrated floors must pass."
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


def _fit_head(features: Any, targets: Any, weights: Any, cfg: TrainConfig) -> Any:
    import torch

    from guardrail._head import ValueHead

    torch.manual_seed(cfg.seed)
    head = ValueHead(features.shape[1], cfg.hidden, len(VALUES), dropout=cfg.dropout)
    head.mean.copy_(features.mean(0))
    head.scale.copy_(features.std(0) + 1e-6)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    head.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(features), generator=generator)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = ((head(features[idx]) - targets[idx]) ** 2 * weights[idx]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def _loss_weights(examples: list[Example], targets: Any, cfg: TrainConfig) -> Any:
    """Per-example, per-value loss weights: rare "opposes" targets up, by source as configured."""
    import torch

    by_source = {"touche": cfg.touche_weight, "written": cfg.written_weight}
    row = torch.tensor(
        [by_source.get(e.source, cfg.benign_weight if e.benign_prompt else 1.0) for e in examples]
    ).unsqueeze(1)
    weights = torch.where(targets < -NO_CONNECTION, cfg.opposed_weight, 1.0) * row
    return torch.where(targets.isnan(), 0.0, weights)  # unlabelled values teach nothing


def _finetune(
    scorer: Any, examples: list[Example], targets: Any, weights: Any, head: Any, cfg: TrainConfig, progress: Progress
) -> Any:
    """Second stage: LoRA over the encoder and the head, trained jointly (LP-FT).

    The head starts from the frozen-encoder fit, so fine-tuning refines features the head already
    reads instead of chasing a random head. Returns the wrapped (unmerged) encoder.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from guardrail._head import pool

    torch.manual_seed(cfg.seed)
    encoder = get_peft_model(
        scorer.encoder,
        LoraConfig(r=cfg.adapter_rank, lora_alpha=cfg.adapter_alpha, lora_dropout=0.1,
                   target_modules=cfg.adapter_targets),
    )  # fmt: skip
    head.to(scorer.device)  # fitted on the host (stage one); trained on from here with the encoder
    windows = scorer.first_windows([(e.prompt, e.response) for e in examples])
    # Harmful answers in the data mostly follow harmful prompts; seeing answers alone too keeps the
    # model from reading the prompt instead of the answer (a benign question, a hateful reply).
    bare = scorer.first_windows([(None, e.response) for e in examples])
    adapter_params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": adapter_params, "lr": cfg.finetune_lr},
         {"params": head.parameters(), "lr": cfg.finetune_head_lr}],
        weight_decay=cfg.weight_decay,
    )  # fmt: skip
    size = cfg.finetune_batch_size
    steps = cfg.finetune_epochs * ((len(windows) + size - 1) // size)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    generator = torch.Generator().manual_seed(cfg.seed)
    encoder.train()
    head.train()
    step, started = 0, time.perf_counter()
    for epoch in range(cfg.finetune_epochs):
        # Batches of similar length waste little on padding; their order is shuffled.
        order = torch.randperm(len(windows), generator=generator).tolist()
        buckets = [order[i : i + size * 50] for i in range(0, len(order), size * 50)]
        batches = []
        for bucket in buckets:
            bucket.sort(key=lambda i: len(windows[i]["input_ids"]))
            batches += [bucket[i : i + size] for i in range(0, len(bucket), size)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            idx = batches[b]
            drop = torch.rand(len(idx), generator=generator) < cfg.prompt_dropout
            batch = scorer.collate([bare[i] if d else windows[i] for i, d in zip(idx, drop.tolist())])
            pred = head(pool(encoder, batch, cfg.layers))
            t, w = targets[idx].to(pred.device), weights[idx].to(pred.device)
            loss = ((pred - t) ** 2 * w).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                rate = step * size / (time.perf_counter() - started)
                progress(f"fine-tune epoch {epoch + 1} step {step}/{steps} loss {loss.item():.4f} "
                         f"({rate:.1f} examples/s)")  # fmt: skip
    encoder.eval()
    head.eval()
    return encoder


def calibrate_floors(scores: Any, clean: Any, target: float) -> dict[str, float]:
    """Per-value floors on the safety values that pass ``target`` of clean answers jointly.

    Each floor is the same quantile ``q`` of its value's scores on clean answers; ``q`` is found
    by bisection so that the share of clean answers above all four floors is ``target``. A floor
    never rises above -0.3: a score in the "no connection" band cannot oppose a value, so it must
    not be blocked for opposing it (a model that scores clean answers tightly around zero would
    otherwise get floors that stop short, neutral text).
    """
    import numpy as np

    clean_scores = scores[clean][:, _SAFETY_COLUMNS]
    lo, hi = 0.0, 1.0 - target
    for _ in range(40):
        q = (lo + hi) / 2
        floors = np.quantile(clean_scores, q, axis=0)
        passed = (clean_scores >= floors).all(axis=1).mean()
        lo, hi = (q, hi) if passed >= target else (lo, q)
    floors = np.minimum(np.quantile(clean_scores, lo, axis=0), -NO_CONNECTION)
    return {v: round(float(f), 3) for v, f in zip(SAFETY_VALUES, floors)}


def calibration(scorer: Any, evaluator: list[Example], target: float, progress: Progress) -> dict[str, Any]:
    """Calibrate the default floors on training answers; the card's ``calibration`` entry."""
    import numpy as np

    # Calibrate on what the product sees: full windowed scores of clean training answers.
    scores = np.array([v.to_list() for v in scorer.score([(e.prompt, e.response) for e in evaluator])])
    clean = np.array([is_clean(e.target) for e in evaluator])
    harmful = np.array([is_harmful(e.target) for e in evaluator])
    floors = calibrate_floors(scores, clean, target)
    progress(f"calibrated floors {floors}")
    safety = scores[:, _SAFETY_COLUMNS]
    floor_row = np.array([floors[v] for v in SAFETY_VALUES])
    return {
        "method": "per-value floors on security, conformity, benevolence, universalism at a common quantile q "
        f"of clean training answers (evaluator_scores, no score < -0.3), q chosen so {target:.0%} of them pass "
        "all four floors; no floor above -0.3 (the edge of the 'no connection' band)",
        "floors": floors,
        "train_clean_pass": round(float((safety[clean] >= floor_row).all(1).mean()), 4),
        "train_block_opposed": round(float((safety[harmful] < floor_row).any(1).mean()), 4),
    }


def _hold_out(examples: list[Example], share: float) -> tuple[list[Example], list[Example]]:
    """``examples`` split into (trained on, held out as validation) by the validation rule."""
    held = [is_validation(e.prompt, share) for e in examples]
    return [e for e, h in zip(examples, held) if not h], [e for e, h in zip(examples, held) if h]


def _floors_engine(floors: dict[str, float]) -> Any:
    from guardrail._engine import Engine
    from guardrail._policy import Policy

    return Engine(Policy(name="calibrated-floors", thresholds={v: {"min": f} for v, f in floors.items()}))


def split_metrics(scorer: Any, floors: dict[str, float], data_dir: Path) -> dict[str, Any]:
    """Metrics on the fixed test split with the calibrated floors as the policy (reported, never tuned on)."""
    from guardrail._evaluate import evaluate

    return evaluate(scorer, _floors_engine(floors), data_dir)


def validation_metrics(
    scorer: Any, floors: dict[str, float], evaluator: list[Example], trustworthy: list[Example]
) -> dict[str, Any]:
    """The test split's metrics on held-out training prompts, to choose between runs without the test split."""
    from guardrail._evaluate import evaluate_examples

    return evaluate_examples(scorer, _floors_engine(floors), evaluator, trustworthy)


def recalibrate(model_dir: Path, data_dir: Path, progress: Progress = print) -> dict[str, Any]:
    """Redo a trained model's calibration and test metrics (weights untouched) and rewrite its card."""
    from guardrail._model import read_card
    from guardrail._scorer import TransformerScorer

    card = read_card(model_dir)
    hyper = card.get("hyperparameters", {})
    target = hyper.get("clean_pass_rate", TrainConfig().clean_pass_rate)
    share = hyper.get("validation", 0.0)
    scorer = TransformerScorer(model_dir, device="cpu")
    evaluator, held_evaluator = _hold_out([e for e in load_evaluator(data_dir) if not e.test], share)
    card["calibration"] = calibration(scorer, evaluator, target, progress)
    if share:
        _, held_trustworthy = _hold_out([e for e in load_trustworthy(data_dir) if not e.test], share)
        floors = card["calibration"]["floors"]
        card["validation_metrics"] = validation_metrics(scorer, floors, held_evaluator, held_trustworthy)
    card["metrics"] = split_metrics(scorer, card["calibration"]["floors"], data_dir)
    write_json(model_dir / "card.json", card)
    return card


def train(data_dir: Path, output: Path, cfg: TrainConfig, progress: Progress = print) -> dict[str, Any]:
    """Train a head, calibrate default floors, and write ``output`` as a model directory.

    Returns the model card (also written to ``output/card.json``).
    """
    import torch
    from safetensors.torch import save_file

    from guardrail._scorer import TransformerScorer

    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    evaluator = [e for e in load_evaluator(data_dir) if not e.test][: cfg.limit]
    trustworthy = [e for e in load_trustworthy(data_dir) if not e.test][: cfg.limit]
    (evaluator, held_evaluator), (trustworthy, held_trustworthy) = (
        _hold_out(evaluator, cfg.validation), _hold_out(trustworthy, cfg.validation))  # fmt: skip
    touche = load_touche(data_dir)[: cfg.limit] if cfg.touche else []
    written = load_written()[: cfg.limit] if cfg.written else []
    two_part = mix_written(written, cfg.seed) if cfg.written_mix else []
    examples: list[Example] = evaluator + trustworthy + touche + written + two_part
    progress(f"training on {len(evaluator)} evaluator + {len(trustworthy)} trustworthy + {len(touche)} Touché23 "
             f"+ {len(written)} written + {len(two_part)} two-part")  # fmt: skip

    model_cfg = ModelConfig(
        model_id=cfg.model_id, encoder=cfg.encoder, layers=cfg.layers, hidden=cfg.hidden,
        max_length=cfg.max_length, prompt_tokens=cfg.prompt_tokens, window_overlap=cfg.window_overlap,
        adapter=AdapterConfig(rank=cfg.adapter_rank, alpha=cfg.adapter_alpha,
                              target_modules=cfg.adapter_targets) if cfg.adapter_rank else None,
    )  # fmt: skip
    scorer = TransformerScorer(config=model_cfg, device=cfg.device)
    items = [(e.prompt, e.response) for e in examples]
    features = torch.cat([scorer.features(items[i : i + 256]) for i in range(0, len(items), 256)])
    progress(f"encoded {len(items)} examples in {time.perf_counter() - started:.0f}s")

    targets = torch.tensor([e.target for e in examples], dtype=torch.float32)
    weights = _loss_weights(examples, targets, cfg)
    targets = targets.nan_to_num(0.0)  # masked by a zero weight
    head = _fit_head(features, targets, weights, cfg)
    adapter = None
    if cfg.adapter_rank:
        from peft import get_peft_model_state_dict

        wrapped = _finetune(scorer, examples, targets, weights, head, cfg, progress)
        adapter = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(wrapped).items()}
        scorer.replace_encoder(wrapped.merge_and_unload())
    scorer.replace_head(head)

    calibrated = calibration(scorer, evaluator, cfg.clean_pass_rate, progress)

    output.mkdir(parents=True, exist_ok=True)
    save_file({k: v.cpu().contiguous() for k, v in head.state_dict().items()}, str(output / "head.safetensors"))
    if adapter is not None:
        save_file(adapter, str(output / "adapter.safetensors"))
    write_json(output / "config.json", model_cfg.model_dump(mode="json"))
    card: dict[str, Any] = {
        "model_id": cfg.model_id,
        "base_encoder": cfg.encoder,
        "architecture": (f"LoRA rank {cfg.adapter_rank} on {cfg.adapter_targets}" if cfg.adapter_rank
                         else "frozen encoder") + f", mean-pooled hidden layers {cfg.layers}, "
        f"MLP head ({cfg.hidden} hidden, GELU), tanh; trained head first, then jointly (LP-FT)",
        "data": {"files": file_hashes(data_dir, touche=cfg.touche, written=cfg.written), "train_examples": {
            "evaluator_scores": len(evaluator), "trustworthy": len(trustworthy), "touche23": len(touche),
            "written": len(written), "written_two_part": len(two_part)}},
        "split_rule": SPLIT_RULE + "  (test rows are never trained on)",
        **({"validation_rule": f"{VALIDATION_RULE}  (share {cfg.validation}; FULCRA rows only, held out of training)"}
           if cfg.validation else {}),
        "hyperparameters": cfg.model_dump(mode="json"),
        "calibration": calibrated,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "device": scorer.device},
        "train_seconds": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    if cfg.validation:
        card["validation_metrics"] = validation_metrics(scorer, calibrated["floors"], held_evaluator, held_trustworthy)
        progress(f"validation split: {card['validation_metrics']}")
    if cfg.evaluate:
        card["metrics"] = split_metrics(scorer, calibrated["floors"], data_dir)
        progress(f"test split: {card['metrics']}")
    write_json(output / "card.json", card)
    return card
