"""``guardrail train``: fit the value head over a frozen encoder, calibrate, write a model directory.

Reproducible: seeded, single-threaded-order data, deterministic full-batch statistics; the card
records data file hashes, the split rule and every hyper-parameter.
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guardrail._scoring.model import AdapterConfig, ModelConfig, span_stride, write_json
from guardrail._training.config import TrainConfig
from guardrail._training.data import (
    HARM_SOURCES,
    SPLIT_RULE,
    VALIDATION_RULE,
    Example,
    file_hashes,
    harm_label,
    is_validation,
    load_evaluator,
    load_harm,
    load_touche,
    load_trustworthy,
    load_written,
    mix_harm,
    mix_written,
)
from guardrail._training.evaluate import is_clean, is_harmful
from guardrail._values import NO_CONNECTION, SAFETY_VALUES, VALUES

Progress = Callable[[str], None]

_SAFETY_COLUMNS = [VALUES.index(v) for v in SAFETY_VALUES]
"""Column of each safety value in a score matrix, in SAFETY_VALUES order."""


def harm_loss(window: Any, lowest: Any, harmful: Any, margin: float) -> Any:
    """Per-example hinge on the safety values, squared: (batch,).

    ``window`` and ``lowest`` are (batch, values) scores: the window's own and the lowest over the
    window and its spans. A harmful answer (``harmful`` 1) pays until its lowest safety score is
    below -0.3 - margin; a harmless one (0) pays for each safety score, window or span, below
    -0.3 + margin; unlabelled rows (NaN) pay nothing.
    """
    import torch

    safety = lowest[:, _SAFETY_COLUMNS]
    opposed = torch.relu(safety.min(dim=1).values + NO_CONNECTION + margin) ** 2
    kept = torch.relu(-NO_CONNECTION + margin - safety).pow(2).sum(dim=1)
    loss = torch.where(harmful > 0.5, opposed, kept)
    return torch.where(harmful.isnan(), torch.zeros_like(loss), loss)


def _loss(pred: Any, lowest: Any, targets: Any, weights: Any, harmful: Any, cfg: TrainConfig) -> Any:
    """Weighted regression on the value targets plus the weighted harm hinge, averaged over the batch."""
    regression = ((pred - targets) ** 2 * weights).mean(dim=1)
    return (regression + cfg.harm_weight * harm_loss(pred, lowest, harmful, cfg.harm_margin)).mean()


def _fit_head(features: Any, targets: Any, weights: Any, harmful: Any, cfg: TrainConfig) -> Any:
    import torch

    from guardrail._scoring.head import ValueHead

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
            pred = head(features[idx])  # the frozen stage sees windows only; spans come with fine-tuning
            loss = _loss(pred, pred, targets[idx], weights[idx], harmful[idx], cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return head.eval()


def _loss_weights(examples: list[Example], targets: Any, cfg: TrainConfig) -> Any:
    """Per-example, per-value loss weights: rare "opposes" targets up, by source as configured."""
    import torch

    by_source = {"touche": cfg.touche_weight, "written": cfg.written_weight, "harm": 0.0}
    row = torch.tensor(
        [by_source.get(e.source, cfg.benign_weight if e.benign_prompt else 1.0) for e in examples]
    ).unsqueeze(1)
    weights = torch.where(targets < -NO_CONNECTION, cfg.opposed_weight, 1.0) * row
    return torch.where(targets.isnan(), 0.0, weights)  # unlabelled values teach nothing


def _share_of(example: Example, cfg: TrainConfig) -> float:
    key = example.subset if example.source == "harm" else example.source
    return cfg.epoch_shares.get(key or "", 1.0)


def _epoch_rows(shares: list[float], epoch: int) -> list[int]:
    """Rows of one fine-tuning epoch: all of each source, or its share, taken in turn so that the
    epochs together go through every row (row i of a source with share 1/k is drawn in epoch i % k)."""
    import torch

    rows = []
    for share in sorted(set(shares)):
        members = [i for i, s in enumerate(shares) if s == share]
        if share >= 1:
            rows += members
            continue
        turns = max(1, round(1 / share))
        order = torch.randperm(len(members), generator=torch.Generator().manual_seed(len(members))).tolist()
        rows += [members[j] for n, j in enumerate(order) if n % turns == epoch % turns]
    return rows


def _finetune(
    scorer: Any,
    examples: list[Example],
    targets: Any,
    weights: Any,
    harmful: Any,
    head: Any,
    cfg: TrainConfig,
    progress: Progress,
) -> Any:
    """Second stage: LoRA over the encoder and the head, trained jointly (LP-FT).

    The head starts from the frozen-encoder fit, so fine-tuning refines features the head already
    reads instead of chasing a random head. Spans are pooled from the same pass and enter the harm
    loss, as they enter scoring. Returns the wrapped (unmerged) encoder.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    from guardrail._scoring.head import lowest_span, pool, pool_spans

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
    # DiaSafety's labels depend on the context, so its answers always keep theirs.
    bare = scorer.first_windows([(None, e.response) for e in examples])
    keeps_prompt = [e.subset == "diasafety" for e in examples]
    shares = [_share_of(e, cfg) for e in examples]
    adapter_params = [p for p in encoder.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [{"params": adapter_params, "lr": cfg.finetune_lr},
         {"params": head.parameters(), "lr": cfg.finetune_head_lr}],
        weight_decay=cfg.weight_decay,
    )  # fmt: skip
    size = cfg.finetune_batch_size
    generator = torch.Generator().manual_seed(cfg.seed)
    epochs = [_epoch_rows(shares, epoch) for epoch in range(cfg.finetune_epochs)]
    steps = sum((len(rows) + size - 1) // size for rows in epochs)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(1, steps - warmup)))
    )
    span_tokens, stride = scorer.config.span_tokens, span_stride(scorer.config)  # as scoring will pool them
    encoder.train()
    head.train()
    step, started = 0, time.perf_counter()
    for epoch, rows in enumerate(epochs):
        # Batches of similar length waste little on padding; their order is shuffled.
        order = [rows[i] for i in torch.randperm(len(rows), generator=generator).tolist()]
        buckets = [order[i : i + size * 50] for i in range(0, len(order), size * 50)]
        batches = []
        for bucket in buckets:
            bucket.sort(key=lambda i: len(windows[i].ids))
            batches += [bucket[i : i + size] for i in range(0, len(bucket), size)]
        for b in torch.randperm(len(batches), generator=generator).tolist():
            idx = batches[b]
            drop = (torch.rand(len(idx), generator=generator) < cfg.prompt_dropout).tolist()
            batch = scorer.collate([bare[i] if d and not keeps_prompt[i] else windows[i] for i, d in zip(idx, drop)])
            if span_tokens:
                window, spans, valid = pool_spans(encoder, batch, cfg.layers, span_tokens, stride)
                pred = head(window)
                lowest = torch.minimum(pred, lowest_span(head(spans), valid))
            else:
                pred = lowest = head(pool(encoder, batch, cfg.layers))
            device = pred.device
            loss = _loss(pred, lowest, targets[idx].to(device), weights[idx].to(device), harmful[idx].to(device), cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % 50 == 0:
                spent = time.perf_counter() - started
                left = spent / step * (steps - step) / 60
                progress(f"fine-tune epoch {epoch + 1} step {step}/{steps} loss {loss.item():.4f} "
                         f"({step * size / spent:.1f} examples/s, ~{left:.0f} min left)")  # fmt: skip
    encoder.eval()
    head.eval()
    return encoder


FLOOR_STEP = 0.01
"""Resolution of the calibrated floors."""


def calibrate_floors(safety: Any, harmless: list[tuple[Any, float]], harmful: Any) -> dict[str, float]:
    """Floors on the safety values that block as many harmful answers as the harmless ones allow.

    ``safety`` holds the four safety scores per answer; ``harmless`` pairs a row mask with the
    largest share of those rows the floors may block; ``harmful`` masks the rows to catch. No floor
    lies above -0.3: a score in the "no connection" band cannot oppose a value. The search starts
    from the highest common floor within every limit, then trades between values: one floor a few
    steps down, another as far up as the limits allow, kept when more harmful answers are caught.
    """
    import numpy as np

    grid = np.round(np.arange(-1.0, -NO_CONNECTION + FLOOR_STEP / 2, FLOOR_STEP), 3)
    top = len(grid) - 1

    def blocked(at: list[int]) -> Any:
        return (safety < grid[at]).any(axis=1)

    def within(at: list[int]) -> bool:
        hit = blocked(at)
        return all(hit[mask].mean() <= limit + 1e-12 for mask, limit in harmless if mask.any())

    def caught(at: list[int]) -> int:
        return int(blocked(at)[harmful].sum())

    def raised(at: list[int], value: int) -> list[int]:
        """``at`` with ``value``'s floor as high as the limits allow."""
        while at[value] < top:
            up = [p + (v == value) for v, p in enumerate(at)]
            if not within(up):
                break
            at = up
        return at

    common = top
    while common and not within([common] * safety.shape[1]):
        common -= 1
    at, best = [common] * safety.shape[1], caught([common] * safety.shape[1])
    improved = True
    while improved:
        improved = False
        for value in range(len(at)):
            for other in range(len(at)):
                for steps in (0, 1, 2, 4, 8):
                    if other == value or at[other] < steps:
                        continue
                    trial = raised([p - steps * (v == other) for v, p in enumerate(at)], value)
                    if within(trial) and (got := caught(trial)) > best:
                        at, best, improved = trial, got, True
    return {v: float(grid[p]) for v, p in zip(SAFETY_VALUES, at)}


def calibration(
    scorer: Any, evaluator: list[Example], harm_held: list[Example], cfg: TrainConfig, progress: Progress
) -> dict[str, Any]:
    """Calibrate the default floors on training rows; the card's ``calibration`` entry.

    Two limits: at most ``1 - clean_pass_rate`` of clean FULCRA training answers blocked, and at
    most ``harmless_block_rate`` of the harm data's held-out harmless training answers; within
    them, as many harmful answers (FULCRA's and the held-out harm rows') blocked as possible.
    """
    import numpy as np

    rows = evaluator + harm_held
    # Calibrate on what the product sees: full windowed scores (spans included).
    scores = np.array([v.to_list() for v in scorer.score([(e.prompt, e.response) for e in rows])])
    safety = scores[:, _SAFETY_COLUMNS]
    n = len(evaluator)
    fulcra = np.arange(len(rows)) < n
    clean = np.array([is_clean(e.target) for e in evaluator] + [False] * len(harm_held))
    harmless = np.array([False] * n + [e.harmful is False for e in harm_held])
    harmful = np.array([is_harmful(e.target) for e in evaluator] + [bool(e.harmful) for e in harm_held])
    floors = calibrate_floors(safety, [(clean, 1 - cfg.clean_pass_rate), (harmless, cfg.harmless_block_rate)], harmful)
    progress(f"calibrated floors {floors}")
    blocked = (safety < np.array([floors[v] for v in SAFETY_VALUES])).any(1)

    def rate(mask: Any) -> float | None:
        return round(float(blocked[mask].mean()), 4) if mask.any() else None

    return {
        "method": "floors on security, conformity, benevolence, universalism, none above -0.3 (the edge of the "
        "'no connection' band), searched in steps of 0.01 to block the most harmful training answers "
        f"(FULCRA benevolence or universalism < -0.5, and held-out harm-data harmful answers) while blocking at most "
        f"{1 - cfg.clean_pass_rate:.0%} of clean FULCRA training answers (no score < -0.3) and at most "
        f"{cfg.harmless_block_rate:.0%} of held-out harm-data harmless answers",
        "target": {"fulcra_clean_blocked_max": round(1 - cfg.clean_pass_rate, 4),
                   "harm_harmless_blocked_max": cfg.harmless_block_rate},
        "floors": floors,
        "train_clean_pass": round(1 - (rate(clean) or 0.0), 4),
        "train_block_opposed": rate(harmful & fulcra),
        "harm_validation": {"harmless_blocked": rate(harmless), "harmful_blocked": rate(harmful & ~fulcra),
                            "n": int((~fulcra).sum())},
    }  # fmt: skip


def _hold_out(examples: list[Example], share: float) -> tuple[list[Example], list[Example]]:
    """``examples`` split into (trained on, held out as validation) by the validation rule."""
    held = [is_validation(e.prompt, share) for e in examples]
    return [e for e, h in zip(examples, held) if not h], [e for e, h in zip(examples, held) if h]


def _floors_engine(floors: dict[str, float]) -> Any:
    from guardrail._policy.engine import Engine
    from guardrail._policy.schema import Policy

    return Engine(Policy(name="calibrated-floors", thresholds={v: {"min": f} for v, f in floors.items()}))


def split_metrics(scorer: Any, floors: dict[str, float], data_dir: Path, *, harm: bool = True) -> dict[str, Any]:
    """Metrics on the fixed test split with the calibrated floors as the policy (reported, never tuned on)."""
    from guardrail._training.evaluate import evaluate

    return evaluate(scorer, _floors_engine(floors), data_dir, harm=harm)


def validation_metrics(
    scorer: Any,
    floors: dict[str, float],
    evaluator: list[Example],
    trustworthy: list[Example],
    harm_held: list[Example],
) -> dict[str, Any]:
    """The test split's metrics on held-out training rows, to choose between runs without the test split."""
    from guardrail._training.evaluate import evaluate_examples, evaluate_harm

    metrics = evaluate_examples(scorer, _floors_engine(floors), evaluator, trustworthy) if evaluator else {}
    if harm_held:
        metrics["harm"] = evaluate_harm(scorer, _floors_engine(floors), harm_held)
    return metrics


def _harm_rows(data_dir: Path, cfg: TrainConfig) -> tuple[list[Example], list[Example]]:
    """Harm training rows as (trained on, held out for calibration and validation)."""
    if not cfg.harm:
        return [], []
    train = load_harm(data_dir, "train")
    rows = [e for source in HARM_SOURCES for e in [e for e in train if e.subset == source][: cfg.limit]]
    held = [is_validation(e.prompt, cfg.harm_validation) for e in rows]
    return [e for e, h in zip(rows, held) if not h], [e for e, h in zip(rows, held) if h]


def recalibrate(model_dir: Path, data_dir: Path, progress: Progress = print, *, harm: bool = True) -> dict[str, Any]:
    """Redo a trained model's calibration and test metrics (weights untouched) and rewrite its card.

    With ``harm`` False the harm data is left out: the floors then answer to FULCRA's clean answers
    alone, and the card has no harm figures.
    """
    from guardrail._scoring.model import read_card
    from guardrail._scoring.scorer import TransformerScorer

    card = read_card(model_dir)
    known = TrainConfig.model_fields
    cfg = TrainConfig(**{k: v for k, v in card.get("hyperparameters", {}).items() if k in known})
    scorer = TransformerScorer(model_dir, device="cpu")
    evaluator, held_evaluator = _hold_out([e for e in load_evaluator(data_dir) if not e.test], cfg.validation)
    _, harm_held = _harm_rows(data_dir, cfg.model_copy(update={"limit": None, "harm": cfg.harm and harm}))
    card.setdefault("data", {})["harm_held_out"] = len(harm_held)
    card["calibration"] = calibration(scorer, evaluator, harm_held, cfg, progress)
    floors = card["calibration"]["floors"]
    _, held_trustworthy = _hold_out([e for e in load_trustworthy(data_dir) if not e.test], cfg.validation)
    card["validation_metrics"] = validation_metrics(scorer, floors, held_evaluator, held_trustworthy, harm_held)
    card["metrics"] = split_metrics(scorer, floors, data_dir, harm=harm)
    write_json(model_dir / "card.json", card)
    return card


def train(data_dir: Path, output: Path, cfg: TrainConfig, progress: Progress = print) -> dict[str, Any]:
    """Train a head, calibrate default floors, and write ``output`` as a model directory.

    Returns the model card (also written to ``output/card.json``).
    """
    import torch
    from safetensors.torch import save_file

    from guardrail._scoring.scorer import TransformerScorer

    started = time.perf_counter()
    torch.manual_seed(cfg.seed)
    evaluator = [e for e in load_evaluator(data_dir) if not e.test][: cfg.limit]
    trustworthy = [e for e in load_trustworthy(data_dir) if not e.test][: cfg.limit]
    (evaluator, held_evaluator), (trustworthy, held_trustworthy) = (
        _hold_out(evaluator, cfg.validation), _hold_out(trustworthy, cfg.validation))  # fmt: skip
    touche = load_touche(data_dir)[: cfg.limit] if cfg.touche else []
    written = load_written()[: cfg.limit] if cfg.written else []
    two_part = mix_written(written, cfg.seed) if cfg.written_mix else []
    harm, harm_held = _harm_rows(data_dir, cfg)
    harm_two_part = mix_harm(harm, cfg.harm_mix if cfg.limit is None else min(cfg.harm_mix, cfg.limit), cfg.seed)
    examples: list[Example] = evaluator + trustworthy + touche + written + two_part + harm + harm_two_part
    harm_counts = {source: sum(e.subset == source for e in harm) for source in HARM_SOURCES}
    progress(f"training on {len(evaluator)} evaluator + {len(trustworthy)} trustworthy + {len(touche)} Touché23 "
             f"+ {len(written)} written + {len(two_part)} two-part + harm {harm_counts} + {len(harm_two_part)} "
             f"harm two-part; {len(harm_held)} harm rows held out")  # fmt: skip

    model_cfg = ModelConfig(
        model_id=cfg.model_id, encoder=cfg.encoder, layers=cfg.layers, hidden=cfg.hidden,
        max_length=cfg.max_length, prompt_tokens=cfg.prompt_tokens, window_overlap=cfg.window_overlap,
        span_tokens=cfg.span_tokens, span_stride=cfg.span_stride if cfg.span_tokens else 0,
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
    labels = [harm_label(e) for e in examples]
    harmful = torch.tensor([math.nan if x is None else float(x) for x in labels], dtype=torch.float32)
    if not cfg.harm:
        harmful = torch.full_like(harmful, math.nan)
    head = _fit_head(features, targets, weights, harmful, cfg)
    progress(f"fitted the head over frozen features at {time.perf_counter() - started:.0f}s")
    adapter = None
    if cfg.adapter_rank:
        from peft import get_peft_model_state_dict

        wrapped = _finetune(scorer, examples, targets, weights, harmful, head, cfg, progress)
        adapter = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(wrapped).items()}
        scorer.replace_encoder(wrapped.merge_and_unload())
    scorer.replace_head(head)
    fitted = time.perf_counter() - started

    calibrated = calibration(scorer, evaluator, harm_held, cfg, progress)

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
        f"MLP head ({cfg.hidden} hidden, GELU), tanh; trained head first, then jointly (LP-FT)"
        + (f"; spans of {cfg.span_tokens} response tokens every {cfg.span_stride} scored by the same head"
           if cfg.span_tokens else ""),
        "data": {"files": file_hashes(data_dir, touche=cfg.touche, written=cfg.written, harm=cfg.harm),
                 "train_examples": {
            "evaluator_scores": len(evaluator), "trustworthy": len(trustworthy), "touche23": len(touche),
            "written": len(written), "written_two_part": len(two_part),
            **{f"harm_{k}": n for k, n in harm_counts.items()},
            "harm_two_part": len(harm_two_part)}, "harm_held_out": len(harm_held)},
        "split_rule": SPLIT_RULE + "  (test rows are never trained on; harm rows: their file's split)",
        "validation_rule": f"{VALIDATION_RULE}  (harm rows: share {cfg.harm_validation}; FULCRA rows: share "
        f"{cfg.validation}; held out of training)",
        "hyperparameters": cfg.model_dump(mode="json"),
        "calibration": calibrated,
        "environment": {"python": platform.python_version(), "torch": torch.__version__,
                        "device": scorer.device, "threads": torch.get_num_threads()},
        "train_seconds": round(time.perf_counter() - started, 1),
        "fit_seconds": round(fitted, 1),
    }  # fmt: skip
    card["validation_metrics"] = validation_metrics(
        scorer, calibrated["floors"], held_evaluator, held_trustworthy, harm_held
    )
    progress(f"validation split: {card['validation_metrics']}")
    if cfg.evaluate:
        card["metrics"] = split_metrics(scorer, calibrated["floors"], data_dir)
        progress(f"test split: {card['metrics']}")
    write_json(output / "card.json", card)
    return card
