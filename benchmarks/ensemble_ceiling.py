"""How far averaging several trained models gets: a ceiling for one-encoder recipes.

Scores the fixed test split once with each model directory given, then measures each model and
the mean of the score vectors of every subset of them with ``guardrail eval``'s metrics
(``evaluate_examples``). The policy is four floors at -0.3 on the safety values, not calibrated per
model, so its AUROC ranks answers by their lowest safety score; the allow and block rates are
reported but not comparable with calibrated ones. An average of N models costs N forward passes, so
it is not a product candidate (the speed bar allows 10 % over one pass); it answers whether more
recipes of this encoder could reach the bars at all.

    python benchmarks/ensemble_ceiling.py guardrail/models/default out/a out/b --names shipped a b
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path
from typing import Any

from bench_check import cpu_name
from train_sweep import BARS

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="Model directories (guardrail train output).")
    parser.add_argument("--names", nargs="*", default=None, help="A short name per model (default: folder names).")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    names = args.names or [m.name for m in args.models]
    if len(names) != len(args.models):
        parser.error(f"--names: {len(names)} names for {len(args.models)} models")

    import numpy as np
    import torch

    from guardrail._scoring.scorer import TransformerScorer
    from guardrail._training.data import load_evaluator, load_trustworthy
    from guardrail._training.evaluate import evaluate_examples
    from guardrail._training.train import _floors_engine
    from guardrail._values import NO_CONNECTION, SAFETY_VALUES, VALUES, ValueVector
    from guardrail.testing import FakeScorer

    started = time.perf_counter()
    evaluator = [e for e in load_evaluator(args.data) if e.test]
    trustworthy = [e for e in load_trustworthy(args.data) if e.test]
    items = [(e.prompt, e.response) for e in evaluator + trustworthy]
    scored = {}
    for name, model in zip(names, args.models):
        scorer = TransformerScorer(model, device="cpu")
        scored[name] = np.array(
            [v.to_list() for i in range(0, len(items), 64) for v in scorer.score(items[i : i + 64])]
        )

    engine = _floors_engine(dict.fromkeys(SAFETY_VALUES, -NO_CONNECTION))
    results: dict[str, Any] = {}
    for size in range(1, len(names) + 1):
        for group in itertools.combinations(names, size):
            mean = np.mean([scored[n] for n in group], axis=0)
            # Same text, same scores: a lookup by text replays the averaged vectors through eval's own code.
            table = {item: ValueVector(**dict(zip(VALUES, row.tolist()))) for item, row in zip(items, mean)}
            found = evaluate_examples(FakeScorer(fn=lambda p, r, t=table: t[(p, r)]), engine, evaluator, trustworthy)
            results["+".join(group)] = {"forward_passes": size, **{k: found[k] for k in BARS}}  # issue 3's figures
    report = {
        "benchmark": "ensemble_ceiling",
        "models": {n: str(m) for n, m in zip(names, args.models)},
        "split": {"evaluator_scores": len(evaluator), "trustworthy": len(trustworthy)},
        "results": results,
        "environment": {"torch": torch.__version__, "device": "cpu", "cpu": cpu_name(), "cpu_count": os.cpu_count()},
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
