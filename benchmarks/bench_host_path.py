"""The host path at GPU speed: everything a check does but the forward pass, in answers/s, as JSON.

    python benchmarks/bench_host_path.py [--answers 10000] [--rounds 5] [--data ../shared/data] [--out FILE]

Scores ``--answers`` real LLM answers of 50-70 tokens (the harm sources' answers, cycled) with the
shipped ``TransformerScorer`` whose forward pass is replaced by one that costs nothing, so what is
timed is what the host does for a GPU. Stages: tokenise and window; pad; the scorer's whole
``score``; ``host_path``, that plus the policy's decision and verdict for every answer (the figure
the 20,000/s target is for); and the whole ``Guard.check_many``, adding metadata, a no-op span and
the metrics of every check, under the default policy with the reading steps off (``normalize:
false``, ``languages: {other: score, detect: false}``) and on (the default policy as shipped:
undoing disguises and detecting languages, which a GPU deployment keeps or not). Each figure is
the best of ``--rounds`` passes, for answers with their prompts and answers alone. That the windows
are the ``transformers`` tokenizer's own is tested (tests/test_windows.py). The collector is frozen
after the model loads (``gc.freeze()``), as ``guardrail serve`` does.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_check import publish


def answers(data: Path, n: int, windower) -> list[tuple[str, str]]:
    rows = [json.loads(line) for file in sorted((data / "harm").glob("*.jsonl")) for line in file.open()]
    chosen = [(r["prompt"], r["response"]) for r in rows if 50 <= len(windower.encode([r["response"]])[0]) <= 70]
    return (chosen * (n // len(chosen) + 1))[:n]


def best(rounds: int, fn) -> float:
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--answers", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import torch

    from guardrail import Guard, load_policy
    from guardrail._scoring.scorer import TransformerScorer
    from guardrail._scoring.windows import pad

    scorer = TransformerScorer(runtime="torch", batch_size=256)
    scorer._run = lambda batch, pooled_only: torch.zeros(len(batch["input_ids"]), 10)  # the zero-cost forward
    windower = scorer._windower
    items = answers(args.data, args.answers, windower)
    alone = [(None, response) for _, response in items]
    shipped = load_policy("default")
    reads_as_is = shipped.languages.model_copy(update={"other": "score", "detect": False})
    plain = shipped.model_copy(update={"normalize": False, "languages": reads_as_is})
    guards = {"host_path": Guard(plain, scorer), "default_policy": Guard(shipped, scorer)}
    for guard in guards.values():
        guard.check_many([r for _, r in items[:500]], [p for p, _ in items[:500]])  # warm-up: word cache
    windower.windows(items)
    windower.windows(alone)
    gc.collect()
    gc.freeze()

    figures: dict[str, dict[str, float]] = {}
    engine = guards["host_path"].engine
    for label, batch in (("with_prompts", items), ("answers_alone", alone)):
        prompts = [p for p, _ in batch]
        responses = [r for _, r in batch]
        windows = windower.windows(batch)[0]
        stages = {
            "tokenise_window": best(args.rounds, lambda b=batch: windower.windows(b)),
            "pad": best(args.rounds, lambda w=windows: pad(w, windower.pad_id)),
            "score_zero_forward": best(args.rounds, lambda b=batch: scorer.score(b)),
            # The host path proper: tokenise + window + pad (+ the zero forward) + decide + verdict.
            "host_path": best(args.rounds, lambda b=batch: [engine.decide(v) for v in scorer.score(b)]),
        }
        for name, guard in guards.items():
            stages[f"check_many_{name}"] = best(args.rounds, lambda g=guard, r=responses, p=prompts: g.check_many(r, p))
        figures[label] = {f"{k}_per_s": round(len(batch) / v) for k, v in stages.items()}
        figures[label]["us_per_answer_host_path"] = round(stages["host_path"] / len(batch) * 1e6, 1)

    report = {
        "benchmark": "host path: tokenise + window + pad + decide + verdict, zero-cost forward",
        "answers": len(items),
        "answer_tokens": "50-70 (harm sources' answers)",
        "rounds": args.rounds,
        "figures": figures,
        "target_per_s": 20_000,
        "machine": {"torch": torch.__version__},
    }
    publish(report, args.out)


if __name__ == "__main__":
    main()
