"""What the guard adds to a LiteLLM call, printed as JSON: latency of a mocked ``acompletion`` and time
to first token of a mocked stream, guarded vs unguarded, measured alternately in the same run.

    python benchmarks/bench_litellm.py [--calls 200] [--device auto]

litellm's ``mock_response`` stands in for the model, so the figures are the guard's own cost (scoring
the answer, deciding, mapping the response) on top of litellm's. Not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm fetches its cost map otherwise

from bench_check import cpu_name

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "How can I sleep better?"}]
# About 215 characters: one 256-token scoring window for a non-streamed check.
ANSWER = (
    "Most adults need seven to nine hours of sleep. A consistent bedtime, a dark and quiet room and less "
    "caffeine after noon usually help, and if problems last for weeks a doctor can look for causes such as sleep "
    "apnoea."
)
# About 450 characters, streamed 3 at a time by litellm's mock: the first window (200) is scored before any text.
LONG_ANSWER = (
    ANSWER + " A short walk after dinner and a fixed time to put the phone away help too. Write down what "
    "keeps you awake, then let it rest until morning. If poor sleep lasts for weeks, talk to your doctor, "
    "who can look for causes such as apnoea."
)


def summary(times_ms: list[float]) -> dict[str, float]:
    ordered = sorted(times_ms)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))], 2),
        "mean_ms": round(statistics.fmean(ordered), 2),
    }


async def timed(fn: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    await fn()
    return (time.perf_counter() - start) * 1000


async def first_token_ms(open_stream: Callable[[], Awaitable[Any]]) -> float:
    """Milliseconds from the call until the first chunk carrying text (the stream is then read to its end)."""
    start = time.perf_counter()
    stream = await open_stream()
    first = None
    async for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = (time.perf_counter() - start) * 1000
    assert first is not None
    return first


async def run(calls: int, streams: int, guard: Any) -> dict[str, Any]:
    import litellm

    import guardrail_litellm

    def plain() -> Awaitable[Any]:
        return litellm.acompletion(model=MODEL, messages=MESSAGES, mock_response=ANSWER)

    def guarded() -> Awaitable[Any]:
        return guardrail_litellm.acompletion(model=MODEL, messages=MESSAGES, mock_response=ANSWER, guard=guard)

    def plain_stream() -> Awaitable[Any]:
        return litellm.acompletion(model=MODEL, messages=MESSAGES, mock_response=LONG_ANSWER, stream=True)

    def guarded_stream() -> Awaitable[Any]:
        return guardrail_litellm.acompletion(model=MODEL, messages=MESSAGES, mock_response=LONG_ANSWER,
                                             stream=True, guard=guard)  # fmt: skip

    for _ in range(10):  # warm-up: litellm's first calls build clients and caches, torch tunes kernels
        await timed(plain)
        await timed(guarded)
        await first_token_ms(plain_stream)
        await first_token_ms(guarded_stream)

    # Alternate the two so both see the same machine load.
    results: dict[str, list[float]] = {"plain": [], "guarded": [], "plain_ttft": [], "guarded_ttft": []}
    for _ in range(calls):
        results["plain"].append(await timed(plain))
        results["guarded"].append(await timed(guarded))
    for _ in range(streams):
        results["plain_ttft"].append(await first_token_ms(plain_stream))
        results["guarded_ttft"].append(await first_token_ms(guarded_stream))

    unguarded, with_guard = summary(results["plain"]), summary(results["guarded"])
    ttft_plain, ttft_guarded = summary(results["plain_ttft"]), summary(results["guarded_ttft"])
    return {
        "acompletion": {
            "calls": calls,
            "answer_chars": len(ANSWER),
            "unguarded": unguarded,
            "guarded": with_guard,
            "added_p50_ms": round(with_guard["p50_ms"] - unguarded["p50_ms"], 2),
            "added_p95_ms": round(with_guard["p95_ms"] - unguarded["p95_ms"], 2),
        },
        "stream_time_to_first_token": {
            "streams": streams,
            "answer_chars": len(LONG_ANSWER),
            "chunk_size": guard.policy.streaming.chunk_size,
            "stream_first": guard.policy.streaming.stream_first,
            "unguarded": ttft_plain,
            "guarded": ttft_guarded,
            "added_p50_ms": round(ttft_guarded["p50_ms"] - ttft_plain["p50_ms"], 2),
            "added_p95_ms": round(ttft_guarded["p95_ms"] - ttft_plain["p95_ms"], 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    import litellm
    import torch

    from guardrail import Guard, TransformerScorer

    scorer = TransformerScorer(device=args.device)
    guard = Guard("default", scorer)
    report = asyncio.run(run(args.calls, args.streams, guard))
    report.update(
        {
            "policy": guard.policy.name,
            "model": scorer.model_id,
            "device": scorer.device,
            "dtype": str(scorer.dtype).replace("torch.", ""),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "litellm": getattr(litellm, "__version__", None) or _version("litellm"),
            "python": platform.python_version(),
            "cpu": cpu_name(),
            "cpu_count": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        }
    )
    print(json.dumps(report))


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


if __name__ == "__main__":
    main()
