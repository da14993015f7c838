"""The scorer's CPU runtimes compared: latency, throughput and fidelity to PyTorch float32, as JSON.

    python benchmarks/bench_cpu_paths.py [--runtimes torch torch-bf16 torch-int8 onnx onnx-int8] [--rounds 3]
        [--repeats 40] [--batch 100] [--threads N] [--data ../shared/data] [--limit N] [--out FILE]

For each runtime (``TransformerScorer(runtime=...)`` on the CPU):

- latency of one whole ``Guard.check`` (tokenise, encode, head, policy, span) on a prompt plus a
  ~60-token and a ~250-token response: p50 / p95 / p99 over all rounds;
- batched throughput: ``check_many`` on ``--batch`` ~60-token responses;
- fidelity on the fixed test split (FULCRA evaluator answers + trustworthy dialogues): largest and
  mean |score difference| to torch float32 over all ten values, the decisions under
  ``policies/default.yaml`` that change, and ``guardrail eval``'s metrics.

Timing runs each runtime in its own process (torch's OpenMP threads and ONNX Runtime's pool would
otherwise compete for the cores between calls), one process per runtime per round, rounds
interleaved so that background load is spread evenly over the runtimes. ``onnx+spin`` and
``onnx-int8+spin`` (timing only) let ONNX Runtime's worker threads spin between calls, which the
scorer does not (``guardrail._scoring.runtime.SPINNING``). Not a test: run it on a quiet machine and copy the
figures into docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_check import PROMPT, RESPONSE_60, cpu_name, latencies

# About 250 tokens with the MiniLM tokenizer (counted and reported): with the prompt, two windows.
RESPONSE_250 = (
    RESPONSE_60 + " Before the dog arrives, dog-proof the house: put away cables, shoes and anything toxic "
    "(chocolate, grapes, onions) and fit a baby gate if you want to keep some rooms "
    "off limits. Buy a sturdy collar with an identification tag, a lead, a crate or a bed, bowls and the "
    "food the shelter has been using, and change food slowly over a week or two to avoid an upset stomach. "
    "In the first days, keep visitors to a minimum and let the dog explore at its own pace; do not force "
    "contact with children or other pets, and always supervise their first meetings. Many rescue dogs "
    "have never lived in a home, so house training may start from scratch: take it outside after meals, "
    "naps and play, and praise it the moment it goes in the right place. If fear or aggression does not ease after "
    "a few weeks, ask a qualified, reward-based trainer or a veterinary behaviourist for help."
)
RUNTIMES = ["torch", "torch-bf16", "torch-int8", "onnx", "onnx-int8"]
VARIANTS = ["onnx+spin", "onnx-int8+spin"]  # timing only: ONNX Runtime's worker threads spinning between calls
REFERENCE = "torch"


def percentiles(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))], 2)

    return {"p50": round(statistics.median(ordered), 2), "p95": at(0.95), "p99": at(0.99), "n": len(ordered)}


def worker(runtime: str, repeats: int, batch: int) -> dict[str, object]:
    """One process, one runtime: raw timings for the parent to pool."""
    from guardrail import Guard, TransformerScorer, _runtime

    runtime, _, variant = runtime.partition("+")
    _runtime.SPINNING = variant == "spin"
    started = time.perf_counter()
    scorer = TransformerScorer(device="cpu", runtime=runtime)  # type: ignore[arg-type]
    load_s = time.perf_counter() - started
    guard = Guard("default", scorer)
    timings: dict[str, list[float]] = {}
    for name, response in (("check_60", RESPONSE_60), ("check_250", RESPONSE_250)):
        timings[name] = latencies(guard, repeats, response)
    responses = [f"{RESPONSE_60} (variant {i})" for i in range(batch)]
    warm = responses[:8]
    guard.check_many(warm, [PROMPT] * len(warm))
    start = time.perf_counter()
    guard.check_many(responses, [PROMPT] * batch)
    batch_s = time.perf_counter() - start
    return {"runtime": scorer.runtime, "spinning": _runtime.SPINNING, "load_s": load_s, "batch_s": batch_s, **timings}


def timed(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    pooled: dict[str, dict[str, list[float]]] = {
        r: {"check_60": [], "check_250": [], "batch_s": []} for r in args.runtimes
    }
    round_p50: dict[str, list[float]] = {r: [] for r in args.runtimes}
    for _ in range(args.rounds):
        for runtime in args.runtimes:
            command = [sys.executable, __file__, "--worker", runtime, "--repeats", str(args.repeats)]
            command += ["--batch", str(args.batch)]
            env = os.environ | ({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {})
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode:
                raise SystemExit(f"worker {runtime} failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            for key in ("check_60", "check_250"):
                pooled[runtime][key] += result[key]
            pooled[runtime]["batch_s"].append(result["batch_s"])
            round_p50[runtime].append(round(statistics.median(result["check_60"]), 2))
    out: dict[str, dict[str, object]] = {}
    for runtime, got in pooled.items():
        batch_s = statistics.median(got["batch_s"])
        out[runtime] = {
            "check_60_ms": percentiles(got["check_60"]),
            "check_250_ms": percentiles(got["check_250"]),
            "check_60_p50_per_round_ms": round_p50[runtime],
            "batch_responses_per_s": round(args.batch / batch_s, 1),
        }
    return out


class _Replay:
    """A scorer answering from vectors scored before, so ``evaluate`` does not score again."""

    def __init__(self, model_id: str, vectors: dict[tuple[str | None, str], object]) -> None:
        self.model_id, self.device, self._vectors = model_id, "cpu", vectors

    def score(self, items: list[tuple[str | None, str]]) -> list[object]:
        return [self._vectors[item] for item in items]

    async def ascore(self, items: list[tuple[str | None, str]]) -> list[object]:
        return self.score(items)


def fidelity(args: argparse.Namespace) -> dict[str, dict[str, object]]:
    import numpy as np

    from guardrail import TransformerScorer, load_policy
    from guardrail._policy.engine import Engine
    from guardrail._training.data import load_evaluator, load_trustworthy
    from guardrail._training.evaluate import evaluate
    from guardrail._values import VALUES

    examples = [e for e in load_evaluator(args.data) if e.test] + [e for e in load_trustworthy(args.data) if e.test]
    items = list(dict.fromkeys((e.prompt, e.response) for e in examples))[: args.limit]
    engine = Engine(load_policy("default"))
    scores: dict[str, np.ndarray] = {}
    decisions: dict[str, list[str]] = {}
    out: dict[str, dict[str, object]] = {}
    for runtime in [REFERENCE, *[r for r in args.runtimes if r != REFERENCE and r in RUNTIMES]]:
        started = time.perf_counter()
        scorer = TransformerScorer(device="cpu", runtime=runtime)  # type: ignore[arg-type]
        load_s = time.perf_counter() - started
        started = time.perf_counter()
        vectors = [v for i in range(0, len(items), 64) for v in scorer.score(items[i : i + 64])]
        score_s = time.perf_counter() - started
        scores[runtime] = np.array([v.to_list() for v in vectors])
        decisions[runtime] = [engine.decide(v).decision for v in vectors]
        diff = np.abs(scores[runtime] - scores[REFERENCE])
        changed = [
            {"item": n, "from": a, "to": b}
            for n, (a, b) in enumerate(zip(decisions[REFERENCE], decisions[runtime]))
            if a != b
        ]
        metrics = None
        if args.limit is None:
            metrics = evaluate(_Replay(scorer.model_id, dict(zip(items, vectors))), engine, args.data)  # type: ignore[arg-type]
            metrics.pop("model_id")
        out[runtime] = {
            "answers": len(items),
            "max_abs_diff": round(float(diff.max()), 6),
            "mean_abs_diff": round(float(diff.mean()), 6),
            "p99_abs_diff": round(float(np.quantile(diff, 0.99)), 6),
            "max_abs_diff_per_value": {v: round(float(diff[:, i].max()), 4) for i, v in enumerate(VALUES)},
            "decision_changes": len(changed),
            "changed": changed[:20],
            "load_s": round(load_s, 2),
            "score_s": round(score_s, 1),
            "eval": metrics,
        }
        del scorer
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runtimes", nargs="+", default=RUNTIMES, choices=RUNTIMES + VARIANTS)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (one process per runtime each).")
    parser.add_argument("--repeats", type=int, default=40, help="Timed checks per text per round.")
    parser.add_argument("--batch", type=int, default=100, help="Responses in the check_many throughput run.")
    parser.add_argument("--threads", type=int, default=None, help="Threads (default: torch's default).")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=None, help="Only the first N test answers (no eval metrics).")
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.repeats, args.batch)))
        return

    import onnxruntime
    import torch

    from guardrail import TransformerScorer
    from guardrail._scoring.runtime import native_bf16

    if args.threads:
        torch.set_num_threads(args.threads)
    reference = TransformerScorer(device="cpu", runtime="torch")
    for runtime in {r.partition("+")[0] for r in args.runtimes}:  # export now, not in a timed process
        TransformerScorer(device="cpu", runtime=runtime)  # type: ignore[arg-type]
    tokens = {
        name: len(reference._tokenizer(text, add_special_tokens=False)["input_ids"])
        for name, text in (("prompt", PROMPT), ("response_60", RESPONSE_60), ("response_250", RESPONSE_250))
    }
    load_start = os.getloadavg()
    result: dict[str, object] = {
        "benchmark": "cpu_paths",
        "model": reference.model_id,
        "tokens": tokens,
        "rounds": args.rounds,
        "repeats_per_round": args.repeats,
        "batch_responses": args.batch,
        "timing": timed(args),
    }
    if not args.skip_fidelity:
        result["fidelity"] = fidelity(args)
    result["machine"] = {
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": args.threads or torch.get_num_threads(),
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "native_bf16": native_bf16(),
        "auto_runtime": TransformerScorer(device="cpu").runtime,
        "python": platform.python_version(),
    }
    text = json.dumps(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
