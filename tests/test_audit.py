"""``guardrail audit`` on span files: the formats it reads, what it counts, the report, its errors."""

from __future__ import annotations

import json
import re
import socket
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from _traffic import write_traffic
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner, Result

from guardrail import AuditError, Guard, Policy, ValueVector
from guardrail._audit.load import BUCKETS, build, load, pca, pick_bucket, read_span_file
from guardrail._cli import app
from guardrail._telemetry.otlpjson import encode_spans
from guardrail.testing import FakeScorer

BAD = ValueVector(benevolence=-0.62, universalism=-0.5)
POLICY = Policy(
    name="audited", version="4", thresholds={"benevolence": {"min": -0.3}, "universalism": {"min": -0.3}},
    actions={"soften": {"type": "rewrite", "strategy": "reask", "max_attempts": 1}},
)  # fmt: skip
PNG = b"\x89PNG\r\n\x1a\n"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["audit", *args])


def recorded(policy: Policy = POLICY, capture: bool = True) -> tuple[Guard, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scorer = FakeScorer({"bad": BAD, "<script>alert('x')</script> bad": BAD})
    return Guard(policy, scorer=scorer, tracer_provider=provider, capture_content=capture), exporter


def write(path: Path, exporter: InMemorySpanExporter) -> Path:
    path.write_text(json.dumps(encode_spans(exporter.get_finished_spans())) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Any]]:
    path = tmp_path_factory.mktemp("traffic") / "spans.jsonl"
    return path, write_traffic(path)


# -- reading ----------------------------------------------------------------------------------


def test_checks_match_the_verdicts(traffic: tuple[Path, list[Any]]) -> None:
    path, verdicts = traffic
    audit = load(str(path))
    assert len(audit.checks) == len(verdicts) == 600
    assert Counter(c.final_decision for c in audit.checks) == Counter(v.final_decision for v in verdicts)
    assert Counter(c.decision for c in audit.checks) == Counter(v.decision for v in verdicts)
    assert Counter(c.deployment for c in audit.checks) == Counter(v.metadata["deployment"] for v in verdicts)
    assert audit.rechecks == sum(v.rewrite.attempts for v in verdicts if v.rewrite is not None)
    assert [c.time_ns for c in audit.checks] == sorted(c.time_ns for c in audit.checks)
    assert {(name, version) for name, version, _ in audit.policies} == {
        ("customer-support", "2.1"), ("default", "1.2"), ("strict", "1.0"),
    }  # fmt: skip


def test_summary_numbers() -> None:
    guard, exporter = recorded()
    guard.check("bad", metadata={"deployment": "a"})
    guard.check("bad", metadata={"deployment": "a"})
    guard.check("fine", metadata={"deployment": "b"})
    guard.check("fine")
    audit = build(read_spans(exporter), "mem")
    assert audit.deployments()[0] == "a" and sorted(audit.deployments()) == ["(none)", "a", "b"]
    rows = {(p, d): dict(c) for p, d, c in audit.decisions_by()}
    assert rows == {
        ("audited v4", "a"): {"block": 2},
        ("audited v4", "b"): {"allow": 1},
        ("audited v4", "(none)"): {"allow": 1},
    }
    rules = {rule: (n, margin) for rule, n, margin in audit.top_rules()}
    assert rules["thresholds.benevolence.min"] == (2, pytest.approx(0.32))
    assert rules["thresholds.universalism.min"] == (2, pytest.approx(0.2))


def read_spans(exporter: InMemorySpanExporter) -> list[Any]:
    from guardrail._audit.load import spans_in

    return list(spans_in(encode_spans(exporter.get_finished_spans())))


def test_final_decision_comes_from_the_enforce_span() -> None:
    policy = POLICY.model_copy(
        update={"thresholds": {"benevolence": POLICY.thresholds["benevolence"].model_copy(update={"action": "soften"})}}
    )
    guard, exporter = recorded(policy)
    guard.enforce("bad", "q", {"deployment": "d"}, reask=lambda previous, feedback: "bad")  # fails: falls back
    guard.enforce("bad", "q", {"deployment": "d"}, reask=lambda previous, feedback: "fine")  # accepted
    audit = build(read_spans(exporter), "mem")
    assert [(c.decision, c.final_decision) for c in audit.checks] == [("rewrite", "block"), ("rewrite", "rewrite")]
    assert audit.checks[0].rewrite == "reask: 1 attempts, fell back to block"
    assert audit.checks[1].rewrite == "reask: 1 attempts, accepted"
    assert (audit.checks[1].response, audit.checks[1].output) == ("bad", "fine")
    assert audit.rechecks == 2


def test_protobuf_json_with_snake_case_and_base64_ids(tmp_path: Path) -> None:
    from google.protobuf.json_format import MessageToJson
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode_protobuf

    guard, exporter = recorded()
    guard.check("bad", metadata={"deployment": "x"})
    [span] = exporter.get_finished_spans()
    path = tmp_path / "proto.json"
    path.write_text(MessageToJson(encode_protobuf([span]), preserving_proto_field_name=True), encoding="utf-8")
    [record] = list(read_span_file(path))
    assert record.span_id == f"{span.context.span_id:016x}"
    assert record.trace_id == f"{span.context.trace_id:032x}"
    assert record.attributes["guardrail.deployment"] == "x"
    assert record.attributes["guardrail.value.benevolence"] == pytest.approx(-0.62)
    assert tuple(record.attributes["guardrail.violations"]) == tuple(span.attributes["guardrail.violations"])  # type: ignore[index]


def test_phoenix_rest_body(tmp_path: Path) -> None:
    # The shape of GET /v1/projects/{name}/spans: flat attributes, the span kind moved out of them.
    scores = {f"guardrail.value.{v}": 0.0 for v in ("self_direction", "stimulation", "hedonism", "achievement",
              "power", "security", "tradition", "conformity", "benevolence", "universalism")}  # fmt: skip
    body = {"data": [{
        "id": "U3Bhbjox", "name": "guardrail.check", "span_kind": "GUARDRAIL", "parent_id": None,
        "context": {"trace_id": "4ff1ff6e57870212c8f84e85605c6ae7", "span_id": "181784faf074d021"},
        "start_time": "2026-11-26T21:03:54.039758+00:00", "end_time": "2026-11-26T21:03:54.039813+00:00",
        "status_code": "UNSET", "status_message": "", "events": [],
        "attributes": {"guardrail.policy.name": "p", "guardrail.policy.version": "1", "guardrail.decision": "allow", **scores},
    }], "next_cursor": None}  # fmt: skip
    path = tmp_path / "phoenix.json"
    path.write_text(json.dumps(body), encoding="utf-8")
    [span] = list(read_span_file(path))
    assert span.attributes["openinference.span.kind"] == "GUARDRAIL"
    assert span.start_ns == 1795727034039758000
    audit = load(str(path))
    assert [(c.policy, c.deployment, c.final_decision) for c in audit.checks] == [("p v1", "(none)", "allow")]


def test_duplicate_spans_count_once(tmp_path: Path) -> None:
    guard, exporter = recorded()
    guard.check("bad")
    line = json.dumps(encode_spans(exporter.get_finished_spans()))
    path = tmp_path / "twice.jsonl"
    path.write_text(line + "\n" + line + "\n", encoding="utf-8")
    assert len(load(str(path)).checks) == 1


def test_pca_and_buckets(traffic: tuple[Path, list[Any]]) -> None:
    audit = load(str(traffic[0]))
    points, loadings, ratio = pca(audit.scored())
    assert points.shape == (600, 2) and loadings.shape == (10, 2)
    assert 0 < ratio[1] <= ratio[0] < 1
    assert pick_bucket(audit.checks) == BUCKETS["1d"]  # 14 days -> daily buckets
    assert pick_bucket(audit.checks, "1h") == 3600
    with pytest.raises(AuditError, match="unknown bucket '2d'; use one of: 1m, 5m"):
        pick_bucket(audit.checks, "2d")


# -- the report -------------------------------------------------------------------------------


def test_report_from_a_span_file(traffic: tuple[Path, list[Any]], tmp_path: Path) -> None:
    out, pngs = tmp_path / "report.html", tmp_path / "png"
    result = invoke(str(traffic[0]), "--out", str(out), "--png", str(pngs))
    assert result.exit_code == 0, result.output
    assert "600 checks, 3 deployment(s), 3 policy version(s)" in result.output
    html = out.read_text(encoding="utf-8")
    for heading in ("Summary", "Final decisions by policy and deployment", "Most violated rules", "Policies seen",
                    "Value profile per deployment", "Responses in value space", "Value drift", "Blocked responses"):  # fmt: skip
        assert re.search(f"<h[23]>{heading}</h[23]>", html), heading
    assert html.count('src="data:image/png;base64,') == 3
    assert "support-bot" in html and "customer-support v2.1" in html
    assert "thresholds.benevolence.min" in html
    assert sorted(p.name for p in pngs.iterdir()) == ["drift.png", "pca.png", "radar.png"]
    assert all(p.read_bytes().startswith(PNG) for p in pngs.iterdir())


def test_report_is_self_contained(traffic: tuple[Path, list[Any]], tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    assert invoke(str(traffic[0]), "--out", str(out)).exit_code == 0
    html = out.read_text(encoding="utf-8")
    assert not re.search(r"<script|<link|@import|url\(|src=\"(?!data:)|href=", html)


def test_blocked_content_is_escaped_and_only_shown_when_captured(tmp_path: Path) -> None:
    guard, exporter = recorded(capture=True)
    guard.enforce("<script>alert('x')</script> bad", prompt="<b>q</b>")
    captured = write(tmp_path / "captured.jsonl", exporter)
    assert invoke(str(captured), "--out", str(tmp_path / "a.html")).exit_code == 0
    html = (tmp_path / "a.html").read_text(encoding="utf-8")
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; bad" in html and "<script" not in html
    assert "&lt;b&gt;q&lt;/b&gt;" in html
    assert "I can&#x27;t help with that request." in html  # what was delivered instead

    guard, exporter = recorded(capture=False)
    guard.enforce("bad", prompt="secret prompt")
    hidden = write(tmp_path / "hidden.jsonl", exporter)
    assert invoke(str(hidden), "--out", str(tmp_path / "b.html")).exit_code == 0
    html = (tmp_path / "b.html").read_text(encoding="utf-8")
    assert "secret prompt" not in html and html.count("not captured") == 3


def test_report_with_one_check(tmp_path: Path) -> None:
    guard, exporter = recorded()
    guard.check("fine")
    path = write(tmp_path / "one.jsonl", exporter)
    result = invoke(str(path), "--out", str(tmp_path / "one.html"))
    assert result.exit_code == 0, result.output
    assert "No response was blocked." in (tmp_path / "one.html").read_text(encoding="utf-8")


# -- errors -----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_errors_name_the_input(tmp_path: Path) -> None:
    missing = tmp_path / "missing.jsonl"
    cases = {
        (str(missing),): f"{missing}: cannot read",
        ("http://127.0.0.1:1",): "http://127.0.0.1:1 is a Phoenix URL: name the project with --project",
        (__file__, "--project", "p"): "--project goes with a Phoenix URL, not with a span file",
        (f"http://127.0.0.1:{free_port()}", "--project", "p"): "cannot reach Phoenix at http://127.0.0.1:",
    }
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"resourceSpans": []}\n{"resourceSpans": [}\n', encoding="utf-8")
    cases[(str(bad),)] = f"{bad}:2:20: invalid JSON"
    empty = tmp_path / "empty.jsonl"
    empty.write_text('{"resourceSpans": []}\n', encoding="utf-8")
    cases[(str(empty),)] = f"{empty}: no guardrail.check spans found (0 spans read)"
    for args, message in cases.items():
        result = invoke(*args, "--out", str(tmp_path / "r.html"))
        assert result.exit_code == 2, (args, result.output)
        assert message in " ".join(result.output.split()), (args, result.output)
    assert not (tmp_path / "r.html").exists()


def test_missing_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    guard, exporter = recorded()
    guard.check("fine")
    path = write(tmp_path / "one.jsonl", exporter)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    result = invoke(str(path), "--out", str(tmp_path / "r.html"))
    assert result.exit_code == 2
    assert "pip install 'value-guardrail[audit]'" in result.output
