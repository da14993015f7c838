"""What wrapping a LangChain chat model costs: building the wrapper, and a call through it. Printed as JSON.

    python benchmarks/bench_langchain.py [--builds 2000] [--calls 200]

- ``construction``: the first ``GuardedChatModel(model=m)`` (it builds the process-wide shared guard:
  the model loads), then the median and p99 of ``--builds`` more (target: under 5 ms), against the
  bare model's own construction.
- ``invoke`` / ``stream``: p50 and p95 of one call on a langchain-core fake model (no network), bare
  and guarded (default policy, shipped model: one real check per call), and the difference.

Not a test: copy the figures, with the machine, into the closing note or docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ANSWER = (
    "Most adults need seven to nine hours of sleep. A consistent bedtime, a dark and quiet room and less "
    "caffeine after noon usually help."
)


def timings(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def summary(ms: list[float]) -> dict[str, float]:
    ms = sorted(ms)
    return {
        "p50_ms": round(statistics.median(ms), 4),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 4),
        "p99_ms": round(ms[int(0.99 * (len(ms) - 1))], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--builds", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()

    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from guardrail_langchain import GuardedChatModel

    inner = FakeListChatModel(responses=[ANSWER])
    start = time.perf_counter()
    first = GuardedChatModel(model=inner)
    first_ms = (time.perf_counter() - start) * 1000
    built = summary(timings(lambda: GuardedChatModel(model=inner), args.builds))
    bare_built = summary(timings(lambda: FakeListChatModel(responses=[ANSWER]), args.builds))

    prompt = "How can I sleep better?"
    for _ in range(5):  # warm both paths
        first.invoke(prompt)
        inner.invoke(prompt)
    calls: dict[str, dict[str, object]] = {}
    for name, run in (("invoke", lambda m: m.invoke(prompt)), ("stream", lambda m: list(m.stream(prompt)))):
        bare = summary(timings(lambda run=run: run(inner), args.calls))
        guarded = summary(timings(lambda run=run: run(first), args.calls))
        calls[name] = {"bare": bare, "guarded": guarded, "added_p50_ms": round(guarded["p50_ms"] - bare["p50_ms"], 3)}

    result = {
        "construction": {
            "first_ms": round(first_ms, 1),
            "after_first": built,
            "bare_model": bare_built,
            "builds": args.builds,
            "target_ms": 5,
        },
        **calls,
        "calls": args.calls,
        "policy": first._choice.guard.policy.name if first._choice.guard else None,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
