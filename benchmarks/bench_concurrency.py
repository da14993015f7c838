"""Throughput of concurrent ``acheck`` callers, with and without micro-batching, in one run.

    python benchmarks/bench_concurrency.py [--callers 1 8 64 256] [--seconds 10] [--device auto]

Each caller loops: ``await guard.acheck(answer_i, prompt)`` with its own answer, for ``--seconds``.
"per_request" scores each call alone (``scorer: {batching: false}``); "micro_batched" shares forward
passes (``batching: true``, ``max_wait_ms`` 2). Prints one JSON object with checks/s per setting,
the ratio, the mean joint batch size, and the machine. Not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_check import PROMPT, RESPONSE_60, cpu_name


async def run(guard: object, callers: int, seconds: float) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def caller(n: int) -> None:
        nonlocal done
        i = 0
        while time.perf_counter() < stop:
            verdict = await guard.acheck(f"{RESPONSE_60} (caller {n}, call {i})", prompt=PROMPT)  # type: ignore[attr-defined]
            assert verdict.error is None, verdict.error
            done += 1
            i += 1

    started = time.perf_counter()
    await asyncio.gather(*(caller(n) for n in range(callers)))
    return done / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--callers", type=int, nargs="+", default=[1, 8, 64, 256])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-wait-ms", type=float, default=2.0)
    args = parser.parse_args()

    import torch

    from guardrail import Guard, Policy, TransformerScorer, load_policy
    from guardrail._scoring.batching import MicroBatcher

    scorer = TransformerScorer(device=args.device)
    base = load_policy("default").model_dump()
    per_request = Guard(Policy.model_validate(base | {"scorer": {"batching": False}}), scorer)
    batched_policy = base | {"scorer": {"batching": True, "max_batch": 64, "max_wait_ms": args.max_wait_ms}}
    batched = Guard(Policy.model_validate(batched_policy), scorer)
    assert isinstance(batched.scorer, MicroBatcher)
    asyncio.run(run(per_request, 4, 1.0))  # warm-up

    results = []
    for callers in args.callers:
        plain = asyncio.run(run(per_request, callers, args.seconds))
        batched.scorer.batch_sizes.clear()
        joint = asyncio.run(run(batched, callers, args.seconds))
        sizes = batched.scorer.batch_sizes
        results.append({
            "callers": callers,
            "per_request_checks_per_s": round(plain, 1),
            "micro_batched_checks_per_s": round(joint, 1),
            "ratio": round(joint / plain, 2),
            "mean_joint_batch": round(sum(sizes) / max(len(sizes), 1), 1),
        })  # fmt: skip
    print(json.dumps({
        "benchmark": "concurrency", "results": results, "seconds_per_setting": args.seconds,
        "max_wait_ms": args.max_wait_ms, "model": scorer.model_id, "device": scorer.device,
        "dtype": str(scorer.dtype).replace("torch.", ""), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
