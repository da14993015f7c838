"""The GPU path in one run: guarded answers/s at 64 and 256 tokens and single-check p50/p99, eager and compiled.

    python benchmarks/bench_gpu.py [--device cuda] [--answers 16384] [--batches 64 128 256 512] [--repeats 300]
        [--out FILE]

For each mode (``eager``: the scorer as shipped; ``compiled``: ``TransformerScorer(compile=True)``,
``torch.compile`` with CUDA graphs over fixed shapes, rows a power of two, tokens a length bucket):

- throughput: ``Guard.check_many`` on ``--answers`` distinct answers that fill 64 and 256 tokens
  (the window with its specials), for each ``--batches`` size (windows per forward pass): the best
  size is reported with all the others;
- latency: ``--repeats`` single ``Guard.check`` calls of a ~60-token answer, p50 and p99.

Everything a guard does is timed (tokenise, window, pad, forward, decide, verdict, span). On a CPU
(``--device cpu --answers 512 --repeats 20``) it runs too, as a check of the script.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_check import PROMPT, RESPONSE_60, publish


def answers_of(scorer, tokens: int, n: int) -> list[str]:
    """``n`` distinct answers whose lone window is ``tokens`` long, specials included."""
    words = (RESPONSE_60 + " ") * (tokens // 40 + 2)
    ids = scorer._windower.encode([words])[0]
    base = scorer._tokenizer.decode(ids[: tokens - 2 - 4])  # [CLS], [SEP], and the numbered suffix
    return [f"{base} {i}" for i in range(n)]


def percentile(times: list[float], q: float) -> float:
    ordered = sorted(times)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--answers", type=int, default=16_384)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--out")
    args = parser.parse_args()

    import torch

    from guardrail import Guard
    from guardrail._scoring.scorer import TransformerScorer

    report: dict[str, object] = {}
    for mode in ("eager", "compiled"):
        runtime = "auto" if args.device.startswith("cuda") else "torch"  # compiling needs PyTorch
        scorer = TransformerScorer(device=args.device, runtime=runtime, compile=mode == "compiled")
        guard = Guard("default", scorer)
        figures: dict[str, object] = {}
        for tokens in (64, 256):
            texts = answers_of(scorer, tokens, args.answers)
            per_batch = {}
            for size in args.batches:
                scorer.batch_size = size
                guard.check_many(texts[: size * 4], timeout_ms=600_000)  # warm-up: compile this shape
                if args.device.startswith("cuda"):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                guard.check_many(texts, timeout_ms=600_000)
                per_batch[size] = round(len(texts) / (time.perf_counter() - start), 1)
            best = max(per_batch, key=per_batch.__getitem__)
            figures[f"answers_per_s_{tokens}_tokens"] = per_batch[best]
            figures[f"best_batch_{tokens}_tokens"] = best
            figures[f"by_batch_{tokens}_tokens"] = per_batch
        scorer.batch_size = 32
        for _ in range(20):
            guard.check(RESPONSE_60, prompt=PROMPT)
        times = []
        for i in range(args.repeats):
            start = time.perf_counter()
            guard.check(f"{RESPONSE_60} ({i})", prompt=PROMPT)
            times.append(time.perf_counter() - start)
        figures["check_p50_ms"] = percentile(times, 0.5)
        figures["check_p99_ms"] = percentile(times, 0.99)
        report[mode] = figures
        del guard, scorer
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()
    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else None
    result = {
        "benchmark": "GPU path: guarded answers/s at 64 and 256 tokens, single check p50/p99, eager vs compiled",
        "device": args.device,
        "gpu": gpu,
        "figures": report,
        "targets": {"answers_per_s_256_tokens": 20_000, "check_p50_ms": 3.0},
        "machine": {"torch": torch.__version__},
    }
    publish(result, args.out)


if __name__ == "__main__":
    main()
