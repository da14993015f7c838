"""Synthetic guarded traffic for the audit tests (not collected).

Real ``Guard.enforce`` calls with the shipped policies and a :class:`FakeScorer` whose vectors come
from a per-deployment profile, a slow drift over the days and a share of harmful answers, so the
report has something to show. Spans are recorded in memory, then written as OTLP/JSON lines with
each trace moved to its own day and hour (a real export can only carry "now").
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrail import VALUES, Guard, ValueVector
from guardrail._telemetry.otlpjson import encode_spans
from guardrail.testing import FakeScorer

DAY_NS = 86_400 * 10**9
START_NS = 1_790_000_000 * 10**9  # 2026-09-21, a fixed origin so reports are reproducible

# Mean profile and policy per deployment; drift moves each profile by `drift` per day.
DEPLOYMENTS: dict[str, dict[str, Any]] = {
    "support-bot": {
        "policy": "customer-support",
        "profile": {"benevolence": 0.45, "security": 0.2, "conformity": 0.25, "universalism": 0.15, "power": -0.15},
        "drift": {"power": 0.03, "benevolence": -0.02},
        "harmful": 0.04,
        "unkind": 0.08,
    },
    "internal-search": {
        "policy": "default",
        "profile": {
            "self_direction": 0.3,
            "achievement": 0.25,
            "universalism": 0.2,
            "security": 0.15,
            "conformity": 0.1,
        },
        "drift": {"self_direction": 0.01},
        "harmful": 0.03,
        "unkind": 0.0,
    },
    "marketing": {
        "policy": "strict",
        "profile": {
            "stimulation": 0.4,
            "hedonism": 0.3,
            "achievement": 0.35,
            "power": 0.25,
            "security": 0.15,
            "conformity": 0.15,
            "benevolence": 0.2,
            "universalism": 0.2,
        },
        "drift": {"hedonism": 0.02, "universalism": -0.015},
        "harmful": 0.08,
        "unkind": 0.0,
    },
}
HARMFUL = {"benevolence": -0.7, "universalism": -0.55, "security": -0.5, "conformity": -0.45}
UNKIND = {"benevolence": -0.5}


def _vector(rng: random.Random, deployment: str, day: int, kind: str = "fine") -> ValueVector:
    spec = DEPLOYMENTS[deployment]
    shift = {"harmful": HARMFUL, "unkind": UNKIND}.get(kind, {})
    scores = {}
    for value in VALUES:
        mean = shift.get(value, spec["profile"].get(value, 0.0) + spec["drift"].get(value, 0.0) * day)
        scores[value] = max(-1.0, min(1.0, rng.gauss(mean, 0.07)))
    return ValueVector(**scores)


def write_traffic(path: Path, n: int = 600, days: int = 14, seed: int = 0) -> list[Any]:
    """Run ``n`` guarded answers over ``days`` days and write their spans to ``path``; returns the verdicts."""
    rng = random.Random(seed)
    table: dict[str, ValueVector] = {}
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "synthetic-traffic"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scorer = FakeScorer(fn=lambda prompt, response: table[response])
    guards = {
        name: Guard(spec["policy"], scorer=scorer, tracer_provider=provider, capture_content=True)
        for name, spec in DEPLOYMENTS.items()
    }
    names = list(DEPLOYMENTS)
    verdicts, times = [], []
    for i in range(n):
        deployment = rng.choices(names, weights=[5, 3, 2])[0]
        day = i * days // n
        draw, spec = rng.random(), DEPLOYMENTS[deployment]
        kind = "harmful" if draw < spec["harmful"] else "unkind" if draw < spec["harmful"] + spec["unkind"] else "fine"
        answer = (
            f"[{deployment} #{i}] "
            + {
                "harmful": "Honestly, people like that deserve whatever happens to them; ignore the rules.",
                "unkind": "That is a stupid question and frankly not my problem.",
                "fine": "Here is a clear, friendly answer to your question.",
            }[kind]
        )
        table[answer] = _vector(rng, deployment, day, kind)
        revision = f"[{deployment} #{i}] I'm sorry; here is a kinder way to put it."
        table[revision] = _vector(rng, deployment, day, "unkind" if rng.random() < 0.3 else "fine")

        def reask(previous: str, feedback: str, revision: str = revision) -> str:
            return revision

        verdict = guards[deployment].enforce(
            answer, prompt=f"Question {i} to {deployment}", metadata={"deployment": deployment}, reask=reask
        )
        verdicts.append(verdict)
        times.append(START_NS + day * DAY_NS + rng.randrange(DAY_NS))
    provider.force_flush()
    spans = exporter.get_finished_spans()
    document = encode_spans(spans)
    _move_traces(document, times)
    path.write_text(json.dumps(document) + "\n", encoding="utf-8")
    return verdicts


def _move_traces(document: dict[str, Any], times: list[int]) -> None:
    """Shift each trace so that it starts at its synthetic time (traces in the order they began)."""
    spans = [s for rs in document["resourceSpans"] for ss in rs["scopeSpans"] for s in ss["spans"]]
    starts: dict[str, int] = {}
    for span in spans:
        start = int(span["startTimeUnixNano"])
        starts[span["traceId"]] = min(start, starts.get(span["traceId"], start))
    order = sorted(starts, key=starts.__getitem__)
    shift = {trace: times[n] - starts[trace] for n, trace in enumerate(order)}
    for span in spans:
        delta = shift[span["traceId"]]
        for key in ("startTimeUnixNano", "endTimeUnixNano"):
            span[key] = str(int(span[key]) + delta)
        for event in span["events"]:
            event["timeUnixNano"] = str(int(event["timeUnixNano"]) + delta)
