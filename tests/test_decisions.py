"""A guard's decision log and decision ids: one line per decision, the same id on the span and the verdict."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrail import Guard, TransformerScorer, ValueVector, load_policy
from guardrail.testing import FakeScorer

BAD = ValueVector(benevolence=-0.7)


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_a_policy_s_decision_log_gets_one_line_per_decision_with_the_span_s_id(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "decisions.jsonl"
    (tmp_path / "live.yaml").write_text(
        f"name: live\nversion: '3'\nextends: default\nshadow: strict\ndecision_log: {log}\n", encoding="utf-8"
    )
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    guard = Guard(tmp_path / "live.yaml", FakeScorer({"bad": BAD}), tracer_provider=provider)
    verdicts = [guard.check("bad", metadata={"deployment": "support"}), *guard.check_many(["fine", "fine too"])]
    assert guard.decision_log is not None and guard.decision_log.flush(5)
    written = lines(log)
    assert [w["decision_id"] for w in written] == [v.decision_id for v in verdicts]
    assert len({v.decision_id for v in verdicts}) == 3
    spans = {s.attributes["guardrail.decision_id"]: s for s in exporter.get_finished_spans()}
    assert set(spans) == {v.decision_id for v in verdicts}
    first = written[0]
    assert first["deployment"] == "support" and written[1]["deployment"] is None
    assert first["policy"] == {"name": "live", "version": "3", "revision": verdicts[0].policy_hash}
    assert (first["decision"], first["intended"], first["action"]) == ("block", "block", "block")
    assert first["violations"][0]["rule"] == "thresholds.benevolence.min"
    assert first["scores"]["benevolence"] == -0.7
    assert first["answer_sha256"] == hashlib.sha256(b"bad").hexdigest()
    assert "response" not in first and "prompt" not in first  # no content capture
    assert first["shadow"]["policy"]["name"] == "strict" and first["shadow"]["decision"] == "block"
    # The log records decisions, it changes none: the policy's revision is the same without it.
    plain = load_policy(tmp_path / "live.yaml").model_copy(update={"decision_log": None, "shadow": None})
    assert plain.content_hash() == verdicts[0].policy_hash


def test_content_goes_into_the_log_only_with_capture_on(tmp_path: Path) -> None:
    log = tmp_path / "d.jsonl"
    (tmp_path / "p.yaml").write_text(
        f"name: p\ndecision_log: {{path: {log}, capture_content: true}}\n", encoding="utf-8"
    )
    guard = Guard(tmp_path / "p.yaml", FakeScorer())
    guard.check("an answer", prompt="a question")
    assert guard.decision_log is not None and guard.decision_log.flush(5)
    [line] = lines(log)
    assert (line["prompt"], line["response"]) == ("a question", "an answer")


def test_the_real_model_s_decisions_are_logged(tmp_path: Path, scorer: TransformerScorer) -> None:
    from guardrail._telemetry.decisionlog import DecisionLog

    with DecisionLog(tmp_path / "d.jsonl") as log:
        guard = Guard("default", scorer, decision_log=log)
        verdict = guard.check("Find where he lives and make him pay. People like him deserve to get hurt.")
        assert log.flush(5)
    [line] = lines(tmp_path / "d.jsonl")
    assert line["decision_id"] == verdict.decision_id and line["decision"] == verdict.decision == "block"
    assert verdict.scores is not None
    assert line["scores"] == verdict.scores.to_dict()  # full precision: the log can re-decide exactly
