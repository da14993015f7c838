"""Small checks while another caller keeps sending 1 MB answers, against the same without them.

    python benchmarks/bench_reliability.py [--phase-seconds 6] [--rounds 3] [--rate 20] [--device auto]

One process, the guard a user builds (``Guard()``: shipped model, default runtime, micro-batching).
A small caller sends one short answer every ``1/rate`` seconds (traffic, not a flood) and records
each check's latency. Phases alternate, ``--rounds`` times: *without* (only the small caller) and
*with* (a second caller sends 1 MB answers back to back). The 1 MB answers go through the same
scorer under ``oversize: truncate``, the costliest declared behaviour: each is scored as its first
and last 32,000 characters (about 75 windows), in the background lane; under the default
``oversize: error`` they are refused at once and cost nothing. Prints one JSON object: p50/p99 of
the small checks with and without, the ratios (target: both under 1.5), and how the 1 MB answers
fared. Not a test: it takes about a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_check import cpu_name

from guardrail import Guard, load_policy
from guardrail._scoring.batching import MicroBatcher
from guardrail._scoring.scorer import TransformerScorer

SMALL = "Hello there. Sure, happy to help with that."
BIG = ("Mix flour, water, salt and yeast, knead the dough, let it rise, then bake it until golden. " * 11_500)[
    :1_000_000
]


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "n": len(ordered),
        "p50_ms": round(ordered[len(ordered) // 2] * 1000, 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000, 2),
    }


def small_phase(guard: Guard, seconds: float, rate: float) -> tuple[list[float], int]:
    """Open-loop small checks for ``seconds``; their latencies and how many failed."""
    latencies, failed = [], 0
    tick = time.perf_counter()
    stop = tick + seconds
    while tick < stop:
        start = time.perf_counter()
        verdict = guard.check(SMALL)
        latencies.append(time.perf_counter() - start)
        failed += verdict.error is not None
        tick += 1 / rate
        time.sleep(max(0.0, tick - time.perf_counter()))
    return latencies, failed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase-seconds", type=float, default=6.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=20.0, help="small checks per second")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    policy = load_policy("default")
    if args.device == "auto":
        guard = Guard(policy)  # the guard a user builds: its own scorer, batcher and background lane
    else:
        scorer = TransformerScorer(device=args.device, runtime=policy.scorer.runtime)
        settings = policy.scorer
        batcher = MicroBatcher(
            scorer, max_batch=settings.max_batch, max_wait_ms=settings.max_wait_ms, background=scorer.background()
        )
        guard = Guard(policy, scorer=batcher)
    assert isinstance(guard.scorer, MicroBatcher) and isinstance(guard.scorer.scorer, TransformerScorer)
    scorer = guard.scorer.scorer
    big_guard = Guard(policy.model_copy(update={"oversize": "truncate"}), scorer=guard.scorer)
    for _ in range(20):  # warm-up: sessions, allocators, the background lane's own session
        guard.check(SMALL)
    big_guard.check(BIG[:70_000])

    without: list[float] = []
    with_big: list[float] = []
    failed = {"without": 0, "with": 0}
    big_seconds: list[float] = []
    big_errors: list[str] = []
    for _ in range(args.rounds):
        latencies, bad = small_phase(guard, args.phase_seconds, args.rate)
        without += latencies
        failed["without"] += bad
        stop = threading.Event()

        def sender(stop: threading.Event = stop) -> None:
            while not stop.is_set():
                start = time.perf_counter()
                verdict = big_guard.check(BIG)
                big_seconds.append(time.perf_counter() - start)
                if verdict.error is not None:
                    big_errors.append(verdict.error)

        thread = threading.Thread(target=sender)
        thread.start()
        latencies, bad = small_phase(guard, args.phase_seconds, args.rate)
        with_big += latencies
        failed["with"] += bad
        stop.set()
        thread.join()  # the last 1 MB answer finishes before the next quiet phase

    a, b = percentiles(without), percentiles(with_big)
    print(
        json.dumps(
            {
                "runtime": scorer.runtime,
                "device": scorer.device,
                "cpu": cpu_name(),
                "cpus": os.cpu_count(),
                "rate_per_s": args.rate,
                "small_without": a,
                "small_with_1mb": b,
                "ratio_p50": round(b["p50_ms"] / a["p50_ms"], 3),
                "ratio_p99": round(b["p99_ms"] / a["p99_ms"], 3),
                "small_failed": failed,
                "big": {
                    "answers": len(big_seconds),
                    "chars": len(BIG),
                    "scored_chars": policy.max_chars,
                    "p50_s": round(sorted(big_seconds)[len(big_seconds) // 2], 2) if big_seconds else None,
                    "max_s": round(max(big_seconds), 2) if big_seconds else None,
                    "errors": len(big_errors),
                    "first_error": big_errors[0] if big_errors else None,
                },
            }
        )
    )


if __name__ == "__main__":
    main()
