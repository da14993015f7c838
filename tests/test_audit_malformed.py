"""``guardrail audit`` on malformed span files: one clear line naming the file and what is wrong, exit 2."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner

from guardrail import Guard, Policy, ValueVector
from guardrail._cli import app
from guardrail._telemetry.otlpjson import encode_spans
from guardrail.testing import FakeScorer


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    """One real OTLP/JSON document holding one checked answer."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    scorer = FakeScorer({"bad": ValueVector(benevolence=-0.9)})
    Guard(Policy(name="p", thresholds={"benevolence": {"min": -0.3}}), scorer, tracer_provider=provider).check("bad")
    return encode_spans(exporter.get_finished_spans())


def _span(doc: dict[str, Any]) -> dict[str, Any]:
    [span] = [s for s in doc["resourceSpans"][0]["scopeSpans"][0]["spans"] if s["name"] == "guardrail.check"]
    return span


def _attribute(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return next(kv for kv in _span(doc)["attributes"] if kv["key"] == key)


def _edit(change: Callable[[dict[str, Any]], None]) -> Callable[[dict[str, Any]], str]:
    def make(doc: dict[str, Any]) -> str:
        doc = copy.deepcopy(doc)
        change(doc)
        return json.dumps(doc) + "\n"

    return make


def _set(key: str, value: Any) -> Callable[[dict[str, Any]], str]:
    return _edit(lambda doc: _attribute(doc, key).__setitem__("value", value))


def _span_field(field: str, value: Any) -> Callable[[dict[str, Any]], str]:
    return _edit(lambda doc: _span(doc).__setitem__(field, value))


FLAT = {"name": "guardrail.check", "context": {"trace_id": "0x01", "span_id": "0x02"}}

# name -> (file contents, or a function of a valid document giving them; what the message must say)
MALFORMED: dict[str, tuple[Any, str]] = {
    "non_utf8": (b'{"resourceSpans": []}\xff\xfe\n', "not UTF-8 text (byte 0xff at offset 21"),
    "empty": (b"", "the file is empty"),
    "blank": (b"  \n\n \n", "the file is empty"),
    "truncated": (lambda doc: json.dumps(doc)[:200], "invalid JSON"),
    "top_level_number": (b"5\n", "expected a JSON object or list of spans, got a number (5)"),
    "top_level_string": (b'"spans"\n', "expected a JSON object or list of spans, got a string ('spans')"),
    "resource_spans_int": (b'{"resourceSpans": 5}\n', "resourceSpans must be a list, got a number (5)"),
    "resource_spans_item": (b'{"resourceSpans": [7]}\n', "resourceSpans[0] must be an object, got a number (7)"),
    "scope_spans_text": (b'{"resourceSpans": [{"scopeSpans": "x"}]}\n', "resourceSpans[0].scopeSpans must be a list"),
    "span_not_object": (
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [null, 3]}]}]}\n',
        "resourceSpans[0].scopeSpans[0].spans[1] must be an object, got a number (3)",
    ),
    "score_1e308": (
        _set("guardrail.value.universalism", {"doubleValue": 1e308}),
        "guardrail.value.universalism is 1e+308, not a score in [-1, 1]",
    ),
    "score_1e308_others_missing": (
        _edit(
            lambda doc: _span(doc).__setitem__(
                "attributes",
                [
                    *[kv for kv in _span(doc)["attributes"] if not kv["key"].startswith("guardrail.value.")],
                    {"key": "guardrail.value.benevolence", "value": {"doubleValue": 1e308}},
                ],
            )
        ),
        "guardrail.value.benevolence is 1e+308, not a score in [-1, 1]",
    ),
    "score_infinite": (
        lambda doc: _set("guardrail.value.power", {"doubleValue": 7.0})(doc).replace("7.0", "Infinity"),
        "guardrail.value.power is inf, not a score in [-1, 1]",
    ),
    "score_text": (_set("guardrail.value.power", {"doubleValue": "high"}), "doubleValue must be a number"),
    "timestamp_text": (_span_field("startTimeUnixNano", "soon"), "startTimeUnixNano must be an integer of nanoseconds"),
    "timestamp_huge": (_span_field("startTimeUnixNano", "1" + "0" * 30), "outside 0 to 2**63"),
    "timestamp_list": (_span_field("endTimeUnixNano", [1]), "endTimeUnixNano must be an integer of nanoseconds"),
    "attribute_not_object": (_span_field("attributes", [5]), "attributes[0] must be an object, got a number (5)"),
    "attributes_object": (_span_field("attributes", {"a": 1}), "attributes must be a list, got an object"),
    "attribute_value_number": (_set("guardrail.decision", 5), "(guardrail.decision) must be an object"),
    "attribute_key_missing": (_span_field("attributes", [{"value": {}}]), "attributes[0].key must be a string"),
    "int_value_text": (_set("guardrail.policy.version", {"intValue": "x1"}), "intValue must be a number"),
    "array_value_number": (_set("guardrail.violations", {"arrayValue": 5}), "must be an object, got a number (5)"),
    "violations_not_list": (_set("guardrail.violations", {"intValue": "5"}), "guardrail.violations must be a list"),
    "status_number": (_span_field("status", 5), "status must be an object, got a number (5)"),
    "events_object": (_span_field("events", {"name": "x"}), "events must be a list, got an object"),
    "deep_nesting": (b"[" * 100_000 + b"]" * 100_000, "JSON nested too deeply"),
    "deep_nesting_small": (b"[" * 900 + b"]" * 900, "no guardrail.check spans found (0 spans read)"),
    "flat_bad_time": ({**FLAT, "start_time": "yesterday"}, "start_time must be an ISO 8601 time"),
    "flat_attributes_list": ({**FLAT, "attributes": [1, 2]}, "attributes must be an object, got a list"),
    "flat_status_text": ({**FLAT, "status": "bad"}, "status must be an object, got a string"),
}


def _contents(spec: Any, document: dict[str, Any]) -> bytes:
    if callable(spec):
        spec = spec(document)
    if isinstance(spec, dict):
        spec = json.dumps(spec) + "\n"
    return spec.encode() if isinstance(spec, str) else spec


def test_at_least_fourteen_kinds() -> None:
    assert len(MALFORMED) >= 14


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_file_is_one_clear_line(name: str, document: dict[str, Any], tmp_path: Path) -> None:
    spec, problem = MALFORMED[name]
    path = tmp_path / f"{name}.jsonl"
    path.write_bytes(_contents(spec, document))
    result = CliRunner().invoke(app, ["audit", str(path), "--out", str(tmp_path / "r.html")])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    assert lines[0].startswith(f"error: {path}"), lines[0]
    assert problem in lines[0], lines[0]
    assert not (tmp_path / "r.html").exists()


def test_the_valid_document_itself_reports(document: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "ok.jsonl"
    path.write_text(json.dumps(document) + "\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["audit", str(path), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "1 checks" in result.output


def test_a_lone_surrogate_is_written_escaped(document: dict[str, Any], tmp_path: Path) -> None:
    text = _set("guardrail.policy.name", {"stringValue": "PLACEHOLDER"})(document).replace("PLACEHOLDER", "\\ud800")
    path = tmp_path / "surrogate.jsonl"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(app, ["audit", str(path), "--out", str(tmp_path / "r.html")])
    assert result.exit_code == 0, result.output
    assert "\\ud800" in (tmp_path / "r.html").read_text(encoding="utf-8")
