"""Latency of one ``Guard.check`` and batched scoring throughput, printed as JSON.

    python benchmarks/bench_check.py [--repeats 50] [--device auto] [--runtime auto] [--model DIR ...]
        [--long N] [--batch-size B] [--compile]

With several ``--model`` directories (e.g. the previous release's and the new one) each is measured
in the same run, so their figures compare. ``--long N`` adds the throughput of ``check_many`` on N
responses that each fill one 256-token window (the GPU target is stated at 256 tokens);
``--compile`` runs the encoder through ``torch.compile`` (on CUDA ``mode="reduce-overhead"``, which
captures CUDA graphs) and reports the latency both ways, to keep whichever wins.

Not a test: run it on a quiet machine and copy the figures into docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guardrail import Guard, TransformerScorer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPT = "What should I keep in mind when adopting a rescue dog?"
# About 60 tokens with the MiniLM tokenizer (checked below and reported).
RESPONSE_60 = (
    "Give the dog time to settle in: keep a calm routine, a quiet place to sleep and short walks "
    "at first. Ask the shelter about its history, health and habits, book a vet visit in the first "
    "week, and use patient, reward-based training. Expect a few weeks before it feels at home."
)


def machine(scorer: TransformerScorer) -> dict[str, object]:
    """Where a scorer's figures come from: device, runtime, dtype, torch, CPU and GPU."""
    import torch

    return {
        "device": scorer.device,
        "runtime": scorer.runtime,
        "dtype": str(scorer.dtype).replace("torch.", ""),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def publish(report: dict[str, object], out: str | os.PathLike[str] | None) -> None:
    """Print a benchmark's JSON report, with the machine and the command that made it; and write it to ``out``."""
    import sys

    report = {
        **report,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    **report.get("machine", {})},  # type: ignore[dict-item]
        "command": " ".join(["python", *sys.argv]),
    }  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if out:
        with open(out, "w", encoding="utf-8") as f:
            f.write(text + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runtime", default="auto", help="auto, torch, torch-bf16, torch-int8, onnx, onnx-int8 (CPU).")
    parser.add_argument("--model", action="append", default=None, help="Model directory (repeatable).")
    parser.add_argument("--long", type=int, default=0, help="Also time check_many on N one-window responses.")
    parser.add_argument("--batch-size", type=int, default=None, help="Windows per forward pass (default: scorer's).")
    parser.add_argument("--compile", action="store_true", help="Also time the encoder under torch.compile.")
    args = parser.parse_args()
    runs = [measure(model, args) for model in args.model or [None]]
    print(json.dumps(runs[0] if len(runs) == 1 else {"runs": runs}))


def measure(model: str | None, args: argparse.Namespace) -> dict[str, object]:

    from guardrail import Guard, TransformerScorer

    options = {"batch_size": args.batch_size} if args.batch_size else {}
    scorer = TransformerScorer(model, device=args.device, runtime=args.runtime, **options)
    guard = Guard("default", scorer)
    tokens = len(scorer._tokenizer(RESPONSE_60, add_special_tokens=False)["input_ids"])
    times = latencies(guard, args.repeats)
    extra: dict[str, object] = {}
    if args.compile:
        extra["compiled"] = compiled(scorer, guard, args.repeats)
    if args.long:
        extra["long"] = long_throughput(scorer, guard, args.long)

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
        **machine(scorer),
        "model_dir": model,
        **extra,
    }


def latencies(guard: Guard, repeats: int, response: str = RESPONSE_60) -> list[float]:
    """Sorted milliseconds of ``repeats`` single checks of ``response``, after a warm-up."""
    for _ in range(5):  # warm-up: first calls allocate and tune kernels
        guard.check(response, prompt=PROMPT)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        guard.check(response, prompt=PROMPT)
        times.append((time.perf_counter() - start) * 1000)
    return sorted(times)


def compiled(scorer: TransformerScorer, guard: Guard, repeats: int) -> dict[str, object]:
    """Single-check latency with the encoder under ``torch.compile``, next to eager in the same process."""
    import torch

    if scorer.runtime != "torch":
        return {"skipped": f"--compile needs runtime torch, not {scorer.runtime}"}
    eager = latencies(guard, repeats)
    mode = "reduce-overhead" if scorer.device.startswith("cuda") else "default"
    # dynamic=False: one graph per input shape, which is what CUDA graphs need; the single-check
    # case always has the same shape after warm-up.
    eager_encoder = scorer._encoder
    scorer._encoder = torch.compile(eager_encoder, mode=mode, dynamic=False)
    try:
        started = time.perf_counter()
        for _ in range(3):
            guard.check(RESPONSE_60, prompt=PROMPT)
        compile_s = time.perf_counter() - started
        fast = latencies(guard, repeats)
    finally:
        # Back to eager: every new batch shape would otherwise compile again inside later measurements.
        scorer._encoder = eager_encoder
    return {
        "mode": mode,
        "compile_s": round(compile_s, 1),
        "eager_p50_ms": round(statistics.median(eager), 2),
        "compiled_p50_ms": round(statistics.median(fast), 2),
        "compiled_p95_ms": round(fast[int(0.95 * (len(fast) - 1))], 2),
    }


def long_throughput(scorer: TransformerScorer, guard: Guard, n: int) -> dict[str, object]:
    """``check_many`` throughput on ``n`` distinct responses that each fill one 256-token window."""
    tokenizer = scorer._tokenizer
    words = (RESPONSE_60 + " ") * 8
    ids = tokenizer(words, add_special_tokens=False)["input_ids"]
    prompt_ids = len(tokenizer(PROMPT, add_special_tokens=False)["input_ids"])
    room = scorer.config.max_length - prompt_ids - 3 - 4  # [CLS], 2x [SEP], the suffix
    base = tokenizer.decode(ids[:room])
    responses = [f"{base} ({i})" for i in range(n)]
    sample = responses[:4]
    windows, _ = scorer._windows([(PROMPT, r) for r in sample])
    guard.check_many(responses[: min(n, 512)], [PROMPT] * min(n, 512))  # warm-up
    start = time.perf_counter()
    guard.check_many(responses, [PROMPT] * n)
    seconds = time.perf_counter() - start
    return {
        "responses": n,
        "window_tokens": max(len(w.ids) for w in windows),
        "windows_per_response": len(windows) / len(sample),
        "seconds": round(seconds, 3),
        "responses_per_s": round(n / seconds, 1),
    }


if __name__ == "__main__":
    main()
