"""How far averaging several trained models gets: a ceiling for one-encoder recipes.

Scores the fixed test split with each model directory given, then with the mean of their score
vectors (every subset of two or more, and all of them), and prints the quality metrics of issue 3
that do not depend on a calibrated policy: Pearson r against the FULCRA evaluator (four safety
values, all ten), trustworthy macro-F1, and AUROC of the lowest safety score for "some value
opposed". An average of N models costs N forward passes, so it is not a product candidate (the
speed bar allows 10 % over one pass); it answers whether more recipes of this encoder could reach
the bars at all.

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

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def metrics(ev: Any, tw: Any, ev_target: Any, tw_target: Any) -> dict[str, float]:
    """Policy-free quality metrics of one set of test-split scores."""
    import numpy as np

    from guardrail._evaluate import auroc, band, macro_f1, pearson
    from guardrail._values import SAFETY_VALUES, VALUES

    safety = [VALUES.index(v) for v in SAFETY_VALUES]
    r = [pearson(ev[:, i], ev_target[:, i]) for i in range(len(VALUES))]
    f1 = [macro_f1([band(t) for t in tw_target[:, i]], [band(s) for s in tw[:, i]]) for i in range(len(VALUES))]
    opposed = (tw_target.min(1) < -0.3).tolist()
    return {
        "pearson_mean_safety": round(float(np.mean([r[i] for i in safety])), 4),
        "pearson_mean_all": round(float(np.mean(r)), 4),
        "macro_f1_mean": round(float(np.mean(f1)), 4),
        "auroc_opposed_min_safety": round(auroc(opposed, (-tw[:, safety].min(1)).tolist()), 4),
    }


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

    from guardrail._data import load_evaluator, load_trustworthy
    from guardrail._scorer import TransformerScorer

    started = time.perf_counter()
    evaluator = [e for e in load_evaluator(args.data) if e.test]
    trustworthy = [e for e in load_trustworthy(args.data) if e.test]
    ev_target = np.array([e.target for e in evaluator])
    tw_target = np.array([e.target for e in trustworthy])

    def scores(scorer: TransformerScorer, rows: list[Any]) -> Any:
        items = [(e.prompt, e.response) for e in rows]
        return np.array([v.to_list() for i in range(0, len(items), 64) for v in scorer.score(items[i : i + 64])])

    scored = {}
    for name, model in zip(names, args.models):
        scorer = TransformerScorer(model, device="cpu")
        scored[name] = (scores(scorer, evaluator), scores(scorer, trustworthy))

    results: dict[str, Any] = {}
    for size in range(1, len(names) + 1):
        for group in itertools.combinations(names, size):
            ev = np.mean([scored[n][0] for n in group], axis=0)
            tw = np.mean([scored[n][1] for n in group], axis=0)
            results["+".join(group)] = {"forward_passes": size, **metrics(ev, tw, ev_target, tw_target)}
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
