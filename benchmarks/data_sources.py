"""What each training source adds: value heads over the frozen encoder, trained on nested source sets.

    python benchmarks/data_sources.py [--data ../shared/data] [--device cpu]

Fine-tuning the encoder for every combination costs hours on a CPU, so the comparison is made
where it is cheap and fair: the frozen base encoder's features are computed once and a head is
fitted on each source set with the same hyper-parameters as ``guardrail train``'s stage one.
Floors are calibrated on the training split each time; every metric is on the fixed test split.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SETS = {
    "evaluator": ("evaluator",),
    "evaluator+trustworthy": ("evaluator", "trustworthy"),
    "evaluator+trustworthy+touche": ("evaluator", "trustworthy", "touche"),
    "evaluator+trustworthy+written": ("evaluator", "trustworthy", "written"),
    "all": ("evaluator", "trustworthy", "touche", "written"),
}
KEYS = ("pearson_mean_safety", "pearson_mean_all", "macro_f1_mean", "auroc_opposed", "allow_rate_clean",
        "block_rate_opposed")  # fmt: skip


def main() -> None:
    import numpy as np
    import torch

    from guardrail._data import load_evaluator, load_touche, load_trustworthy, load_written
    from guardrail._engine import Engine
    from guardrail._evaluate import evaluate, is_clean
    from guardrail._model import ModelConfig
    from guardrail._policy import Policy
    from guardrail._scorer import TransformerScorer
    from guardrail._training import TrainConfig, _fit_head, _loss_weights, calibrate_floors

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    started = time.perf_counter()
    cfg = TrainConfig(adapter_rank=0)
    sources = {
        "evaluator": [e for e in load_evaluator(args.data) if not e.test],
        "trustworthy": [e for e in load_trustworthy(args.data) if not e.test],
        "touche": load_touche(args.data),
        "written": load_written(),
    }
    model_cfg = ModelConfig(model_id="frozen-ablation", encoder=cfg.encoder, layers=cfg.layers, hidden=cfg.hidden)
    scorer = TransformerScorer(config=model_cfg, device=args.device)
    features, targets = {}, {}
    for name, examples in sources.items():
        items = [(e.prompt, e.response) for e in examples]
        features[name] = torch.cat([scorer.features(items[i : i + 256]) for i in range(0, len(items), 256)])
        targets[name] = torch.tensor([e.target for e in examples], dtype=torch.float32)

    calibration = sources["evaluator"]
    clean = np.array([is_clean(e.target) for e in calibration])
    results = {}
    for label, names in SETS.items():
        examples = [e for n in names for e in sources[n]]
        t = torch.cat([targets[n] for n in names])
        w = _loss_weights(examples, t, cfg)
        head = _fit_head(torch.cat([features[n] for n in names]), t.nan_to_num(0.0), w, cfg)
        scorer.replace_head(head)
        scores = np.array([v.to_list() for v in scorer.score([(e.prompt, e.response) for e in calibration])])
        floors = calibrate_floors(scores, clean, cfg.clean_pass_rate)
        policy = Policy(name="calibrated-floors", thresholds={v: {"min": f} for v, f in floors.items()})
        report = evaluate(scorer, Engine(policy), args.data)
        results[label] = {"train_examples": len(examples)} | {k: report[k] for k in KEYS}

    print(json.dumps({
        "benchmark": "data_sources", "encoder": cfg.encoder, "head": "frozen encoder, stage-one head",
        "results": results, "torch": torch.__version__, "device": args.device,
        "machine": platform.processor() or platform.machine(), "seconds": round(time.perf_counter() - started, 1),
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
