"""Latency of one ``Guard.check`` and batched scoring throughput, printed as JSON.

    python benchmarks/bench_check.py [--repeats 50] [--device auto] [--runtime auto] [--model DIR ...]

With several ``--model`` directories (e.g. the previous release's and the new one) each is measured
in the same run, so their figures compare.

Not a test: run it on a quiet machine and copy the figures into the README.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "What should I keep in mind when adopting a rescue dog?"
# About 60 tokens with the MiniLM tokenizer (checked below and reported).
RESPONSE_60 = (
    "Give the dog time to settle in: keep a calm routine, a quiet place to sleep and short walks "
    "at first. Ask the shelter about its history, health and habits, book a vet visit in the first "
    "week, and use patient, reward-based training. Expect a few weeks before it feels at home."
)


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runtime", default="auto", help="auto, torch, torch-int8, onnx, onnx-int8 (CPU).")
    parser.add_argument("--model", action="append", default=None, help="Model directory (repeatable).")
    args = parser.parse_args()
    runs = [measure(model, args) for model in args.model or [None]]
    print(json.dumps(runs[0] if len(runs) == 1 else {"runs": runs}))


def measure(model: str | None, args: argparse.Namespace) -> dict[str, object]:
    import torch

    from guardrail import Guard, TransformerScorer

    scorer = TransformerScorer(model, device=args.device, runtime=args.runtime)
    guard = Guard("default", scorer)
    tokens = len(scorer._tokenizer(RESPONSE_60, add_special_tokens=False)["input_ids"])

    for _ in range(5):  # warm-up: first calls allocate and tune kernels
        guard.check(RESPONSE_60, prompt=PROMPT)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        guard.check(RESPONSE_60, prompt=PROMPT)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()

    responses = [f"{RESPONSE_60} (variant {i})" for i in range(args.batch)]
    prompts = [PROMPT] * args.batch
    guard.check_many(responses[:8], prompts[:8])
    start = time.perf_counter()
    guard.check_many(responses, prompts)
    batch_s = time.perf_counter() - start

    return {
        "check_p50_ms": round(statistics.median(times), 2),
        "check_p95_ms": round(times[int(0.95 * (len(times) - 1))], 2),
        "response_tokens": tokens,
        "repeats": args.repeats,
        "batch_responses": args.batch,
        "batch_seconds": round(batch_s, 3),
        "batch_responses_per_s": round(args.batch / batch_s, 1),
        "model": scorer.model_id,
        "device": scorer.device,
        "runtime": scorer.runtime,
        "dtype": str(scorer.dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "model_dir": model,
    }


if __name__ == "__main__":
    main()
