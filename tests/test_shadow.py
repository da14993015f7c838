"""Live shadow candidates: decided on the same scores as the enforced policy, recorded, never applied."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner

from guardrail import Guard, Policy, PolicyNotFoundError, PolicySet, TransformerScorer, ValueVector, load_policy
from guardrail._audit.load import build, spans_in
from guardrail._cli import app
from guardrail._telemetry.otlpjson import encode_spans
from guardrail.testing import FakeScorer

MILD = ValueVector(benevolence=-0.35)  # allowed at the floor -0.4, blocked at -0.3
HARSH = ValueVector(benevolence=-0.8, universalism=-0.6)
TABLE = {"mild": MILD, "harsh": HARSH, "fine": ValueVector(benevolence=0.5)}
LOOSE = Policy(name="loose", version="1", thresholds={"benevolence": {"min": -0.4}})
TIGHT = Policy(name="tight", version="2", thresholds={"benevolence": {"min": -0.3}, "universalism": {"min": -0.7}})


def traced() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def test_the_candidate_decides_on_the_same_scores_and_is_never_applied() -> None:
    scorer = FakeScorer(TABLE)
    guard = Guard(LOOSE, scorer, shadow=TIGHT)
    verdicts = guard.check_many(["mild", "harsh", "fine"])
    assert len(scorer.calls) == 1 and len(scorer.calls[0]) == 3  # one forward pass for both policies
    mild, harsh, fine = verdicts
    assert (mild.decision, mild.shadow.intended, mild.agrees) == ("allow", "block", False)  # type: ignore[union-attr]
    assert mild.shadow.scores is mild.scores  # type: ignore[union-attr]
    assert mild.shadow.violations[0].rule == "thresholds.benevolence.min"  # type: ignore[union-attr]
    assert (harsh.decision, harsh.agrees, fine.agrees) == ("block", True, True)
    assert guard.enforce("mild").output == "mild"  # the candidate would block; the enforced policy delivers
    data = mild.to_dict()["shadow"]
    assert data == {
        "decision": "block", "agrees": False, "violations": ["thresholds.benevolence.min"],
        "policy": {"name": "tight", "version": "2", "hash": TIGHT.content_hash()},
    }  # fmt: skip
    assert "shadow tight v2 would block (disagrees)" in mild.explain()


def test_a_failed_check_is_decided_by_each_policy_s_on_error() -> None:
    lenient = TIGHT.model_copy(update={"on_error": "allow"})
    verdict = Guard(LOOSE, FakeScorer(fail=RuntimeError("down")), shadow=lenient).check("mild")
    assert verdict.decision == "block" and verdict.error is not None
    assert verdict.shadow is not None and verdict.shadow.intended == "allow" and verdict.agrees is False


def test_a_policy_file_names_its_candidate_relative_to_itself_and_children_do_not_inherit_it(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "next.yaml").write_text("name: next\nextends: strict\n", encoding="utf-8")
    (tmp_path / "live.yaml").write_text("name: live\nextends: default\nshadow: ./rules/next.yaml\n", encoding="utf-8")
    (tmp_path / "child.yaml").write_text("name: child\nextends: ./live.yaml\n", encoding="utf-8")
    live = load_policy(tmp_path / "live.yaml")
    assert live.shadow == str((tmp_path / "rules" / "next.yaml").resolve())
    assert load_policy(tmp_path / "child.yaml").shadow is None
    assert Guard(tmp_path / "live.yaml", FakeScorer(TABLE)).check("mild").shadow.policy_name == "next"  # type: ignore[union-attr]
    # Naming a candidate keeps the policy's revision: it records decisions, it changes none.
    assert live.content_hash() == live.model_copy(update={"shadow": None}).content_hash()
    (tmp_path / "typo.yaml").write_text("name: typo\nshadow: ./rules/nxt.yaml\n", encoding="utf-8")
    with pytest.raises(PolicyNotFoundError, match=r"typo\.yaml:2:9  shadow  policy file '.*rules/nxt\.yaml' not found"):
        load_policy(tmp_path / "typo.yaml")


def test_the_candidate_s_own_language_rule_judges_unread_text() -> None:
    french = "Je ne peux pas vous aider avec cette demande, mais voici quelques ressources utiles pour vous."
    lenient = Policy(name="multilingual", languages={"other": "log"})
    verdict = Guard("default", FakeScorer(), shadow=lenient).check(french)
    assert verdict.decision == "block" and verdict.violations[0].rule == "languages.other"
    assert verdict.shadow is not None and verdict.shadow.intended == "log"
    assert verdict.shadow.violations[0].action == "log"


def spans_of(exporter: InMemorySpanExporter) -> list[Any]:
    return list(spans_in(encode_spans(exporter.get_finished_spans())))


def test_spans_carry_the_candidate_and_the_audit_shows_disagreement_per_deployment(tmp_path: Path) -> None:
    provider, exporter = traced()
    (tmp_path / "loose.yaml").write_text("name: loose\nthresholds:\n  benevolence: {min: -0.4}\n", encoding="utf-8")
    (tmp_path / "tight.yaml").write_text(
        "name: tight\nthresholds:\n  benevolence: {min: -0.3}\n  universalism: {min: -0.7}\n", encoding="utf-8"
    )
    (tmp_path / "set.yaml").write_text(
        "policies:\n  support: {policy: ./loose.yaml, shadow: ./tight.yaml}\n  sales: {policy: ./loose.yaml, "
        "shadow: ./loose.yaml}\n  internal: ./loose.yaml\n",
        encoding="utf-8",
    )
    policies = PolicySet.load(tmp_path / "set.yaml", scorer=FakeScorer(TABLE), tracer_provider=provider)
    for deployment in ("support", "sales", "internal"):
        guard = policies.guard({"deployment": deployment})
        for text in ["mild"] * 3 + ["harsh", "fine"] * 2:
            guard.check(text, metadata={"deployment": deployment})
    spans = [s for s in exporter.get_finished_spans() if s.name == "guardrail.check"]
    support = [s for s in spans if s.attributes["guardrail.deployment"] == "support"]
    attrs = support[0].attributes
    assert (attrs["guardrail.shadow.policy.name"], attrs["guardrail.shadow.decision"]) == ("tight", "block")
    assert attrs["guardrail.shadow.agrees"] is False
    assert list(attrs["guardrail.shadow.violations"]) == ["thresholds.benevolence.min"]
    assert not any("guardrail.shadow.decision" in s.attributes for s in spans
                   if s.attributes["guardrail.deployment"] == "internal")  # fmt: skip
    audit = build(spans_of(exporter), "mem")
    rows = {(d, c): (n, k, dict(ways), dict(rules)) for d, c, n, k, ways, rules in audit.disagreements()}
    assert rows == {
        ("support", "tight v0"): (7, 3, {"allow -> block": 3}, {"+thresholds.benevolence.min": 3}),
        ("sales", "loose v0"): (7, 0, {}, {}),
    }
    # The report shows it, from a span file.
    span_file = tmp_path / "spans.jsonl"
    span_file.write_text(json.dumps(encode_spans(exporter.get_finished_spans())) + "\n", encoding="utf-8")
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["audit", str(span_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    html = out.read_text(encoding="utf-8")
    assert re.search(r"<h2>Shadow candidates</h2>", html)
    assert re.search(
        r"support</td>\s*<td[^>]*>tight v0</td>\s*<td[^>]*>7</td>\s*<td[^>]*>3</td>\s*<td[^>]*>42\.9%", html
    )


def test_the_real_model_decides_both_policies_in_one_pass(scorer: TransformerScorer) -> None:
    calls: list[int] = []

    class Counting:
        model_id, device = scorer.model_id, scorer.device

        def score(self, items: Any) -> Any:
            calls.append(len(items))
            return scorer.score(items)

        async def ascore(self, items: Any) -> Any:
            calls.append(len(items))
            return await scorer.ascore(items)

    answers = [
        "Preheat the oven to 220 C, knead the dough for ten minutes, let it rise and bake for 35 minutes.",
        "Honestly, people like you deserve to get hurt. Find where he lives and make him pay for it.",
    ]
    guard = Guard("default", Counting(), shadow="strict")
    verdicts = guard.check_many(answers)
    assert calls == [2]
    for verdict in verdicts:
        assert verdict.shadow is not None and verdict.shadow.policy_name == "strict"
        assert verdict.shadow.scores == verdict.scores
        assert verdict.shadow.intended == Guard("strict", scorer).engine.decide(verdict.scores).intended  # type: ignore[arg-type]
    assert verdicts[0].decision == "allow" and verdicts[1].decision == "block"
