"""What a decision log costs the caller: ``DecisionLog.record`` latency, the writer's drain rate, and the
throughput of ``Guard.check_many`` with and without a log (and with a shadow candidate), printed as JSON.

    python benchmarks/bench_decision_log.py [--calls 50000] [--out FILE]

The scorer returns a fixed vector, so what is measured is the host side only: deciding, the second
policy, the id, the log line. Not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench_check import publish

from guardrail import DecisionLog, Guard, Policy, ValueVector
from guardrail._types import Item

ANSWER = "Start by quietly collecting every small mistake they make, then forward a doctored version to your manager. "
VECTOR = ValueVector(benevolence=-0.62, universalism=-0.5, power=0.4)
POLICY = Policy(
    name="bench", version="1", normalize=False, languages={"other": "score", "detect": False},
    thresholds={v: {"min": -0.3} for v in ("security", "conformity", "benevolence", "universalism")},
)  # fmt: skip


class _Fixed:
    model_id, device = "fixed", "cpu"

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        return [VECTOR] * len(items)

    async def ascore(self, items: Sequence[Item]) -> list[ValueVector]:
        return [VECTOR] * len(items)


def _quantiles(ns: list[int]) -> dict[str, float]:
    ns = sorted(ns)
    at = lambda p: round(ns[int(p * (len(ns) - 1))] / 1000, 2)  # noqa: E731
    return {"median_us": at(0.5), "p99_us": at(0.99), "p999_us": at(0.999), "max_us": round(ns[-1] / 1000, 1)}


def record_latency(folder: Path, calls: int) -> dict[str, object]:
    """``record()`` back to back while the writer drains, then the time the writer needs to finish."""
    verdict = Guard(POLICY, _Fixed()).check(ANSWER * 3)
    with DecisionLog(folder / "record.jsonl", queue_size=calls + 1) as log:
        lat = []
        for _ in range(calls):
            t0 = time.perf_counter_ns()
            log.record(verdict, deployment="bot", prompt="q", response=ANSWER * 3)
            lat.append(time.perf_counter_ns() - t0)
        started = time.perf_counter()
        assert log.flush(60)
        drain = time.perf_counter() - started
        dropped = log.dropped
    lines = sum(1 for _ in (folder / "record.jsonl").open(encoding="utf-8"))
    return {"calls": calls, **_quantiles(lat), "drain_after_s": round(drain, 3), "lines": lines, "dropped": dropped}


def check_rates(folder: Path, batches: int) -> dict[str, object]:
    """``check_many`` answers per second: bare, with a shadow candidate, with a decision log, with both."""
    texts = [f"{ANSWER} ({n})" for n in range(1000)]
    candidate = POLICY.model_copy(update={"name": "candidate"})
    rates: dict[str, object] = {}
    for name, options in (("bare", {}), ("shadow", {"shadow": candidate}), ("log", {"log": True}),
                          ("shadow_and_log", {"shadow": candidate, "log": True})):  # fmt: skip
        log = DecisionLog(folder / f"{name}.jsonl", queue_size=len(texts) * batches + 1) if options.get("log") else None
        guard = Guard(POLICY, _Fixed(), shadow=options.get("shadow"), decision_log=log)
        guard.check_many(texts)  # warm
        runs = []
        for _ in range(batches):
            t0 = time.perf_counter()
            guard.check_many(texts)
            runs.append(len(texts) / (time.perf_counter() - t0))
        if log is not None:
            log.close(60)
        rates[name] = {"answers_per_s": round(statistics.median(runs)), "best": round(max(runs))}
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000, help="record() calls timed")
    parser.add_argument("--batches", type=int, default=9, help="check_many batches of 1,000 answers per variant")
    parser.add_argument("--out", help="also write the JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        report = {
            "benchmark": "decision_log",
            "record": record_latency(folder, args.calls),
            "check_many": check_rates(folder, args.batches),
        }
    publish(report, args.out)


if __name__ == "__main__":
    main()
