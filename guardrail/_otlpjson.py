"""OTLP/JSON for spans: encode finished SDK spans, decode OTLP/JSON documents back to plain spans.

The encoding is the OTLP/JSON form of an ``ExportTraceServiceRequest`` (lowerCamelCase keys, hex
trace and span ids, 64-bit integers as strings), one document per line in a file: the form the
OpenTelemetry Collector's file exporter writes. Decoding also takes protobuf's snake_case spelling
and base64 ids, so documents from other tools read too. Plain dicts and stdlib only: no protobuf.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class SpanRecord:
    """One span, whatever format it was read from: ids as hex, times in ns since the epoch."""

    name: str
    trace_id: str
    span_id: str
    parent_id: str | None
    start_ns: int
    end_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)
    events: tuple[tuple[str, dict[str, Any]], ...] = ()
    status: str = "UNSET"
    resource: dict[str, Any] = field(default_factory=dict)


# -- encoding ---------------------------------------------------------------------------------


def any_value(value: Any) -> dict[str, Any]:
    """An attribute value as an OTLP/JSON ``AnyValue``."""
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": key_values(value)}}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [any_value(v) for v in value]}}
    return {"stringValue": str(value)}


def key_values(attributes: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """Attributes as an OTLP/JSON ``KeyValue`` list."""
    return [{"key": k, "value": any_value(v)} for k, v in (attributes or {}).items()]


def encode_spans(spans: Sequence[Any]) -> dict[str, Any]:
    """Finished SDK spans (``ReadableSpan``) as one OTLP/JSON ``ExportTraceServiceRequest``.

    Spans are grouped by resource and instrumentation scope, as the OTLP exporters do.

    Example:
        >>> encode_spans([])
        {'resourceSpans': []}
    """
    groups: dict[str, dict[str, Any]] = {}
    for span in spans:
        resource = dict(span.resource.attributes) if span.resource is not None else {}
        scope = span.instrumentation_scope
        key = json.dumps(resource, sort_keys=True, default=str)
        group = groups.setdefault(key, {"resource": {"attributes": key_values(resource)}, "scopes": {}})
        scope_key = f"{scope.name}\0{scope.version}" if scope is not None else ""
        scope_json = {"name": scope.name, "version": scope.version or ""} if scope is not None else {}
        entry = group["scopes"].setdefault(scope_key, {"scope": scope_json, "spans": []})
        entry["spans"].append(_encode_span(span))
    return {
        "resourceSpans": [
            {"resource": g["resource"], "scopeSpans": list(g["scopes"].values())} for g in groups.values()
        ]
    }


def _encode_span(span: Any) -> dict[str, Any]:
    context = span.context
    out: dict[str, Any] = {
        "traceId": f"{context.trace_id:032x}",
        "spanId": f"{context.span_id:016x}",
        "name": span.name,
        "kind": span.kind.value + 1,  # the SDK's enum starts at INTERNAL = 0, OTLP's at UNSPECIFIED = 0
        "startTimeUnixNano": str(span.start_time or 0),
        "endTimeUnixNano": str(span.end_time or 0),
        "attributes": key_values(span.attributes),
        "events": [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": key_values(e.attributes)}
            for e in span.events
        ],
        "status": {"code": span.status.status_code.value},
    }
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    if span.status.description:
        out["status"]["message"] = span.status.description
    return out


# -- decoding ---------------------------------------------------------------------------------


def is_otlp(document: Mapping[str, Any]) -> bool:
    """Whether a decoded JSON object is an OTLP/JSON trace export."""
    return "resourceSpans" in document or "resource_spans" in document


def decode(document: Mapping[str, Any]) -> Iterator[SpanRecord]:
    """The spans of one OTLP/JSON ``ExportTraceServiceRequest`` (camelCase or snake_case keys)."""
    for resource_spans in _get(document, "resourceSpans") or []:
        resource = _attributes(_get(_get(resource_spans, "resource") or {}, "attributes"))
        for scope_spans in (
            _get(resource_spans, "scopeSpans") or _get(resource_spans, "instrumentationLibrarySpans") or []
        ):
            for span in _get(scope_spans, "spans") or []:
                yield _decode_span(span, resource)


def _decode_span(span: Mapping[str, Any], resource: dict[str, Any]) -> SpanRecord:
    status = _get(span, "status") or {}
    code = status.get("code", 0)
    events = tuple((str(e.get("name", "")), _attributes(_get(e, "attributes"))) for e in _get(span, "events") or [])
    parent = _get(span, "parentSpanId")
    return SpanRecord(
        name=str(span.get("name", "")),
        trace_id=_hex_id(_get(span, "traceId"), 16),
        span_id=_hex_id(_get(span, "spanId"), 8),
        parent_id=_hex_id(parent, 8) if parent else None,
        start_ns=int(_get(span, "startTimeUnixNano") or 0),
        end_ns=int(_get(span, "endTimeUnixNano") or 0),
        attributes=_attributes(_get(span, "attributes")),
        events=events,
        status=_STATUS.get(code, str(code)) if isinstance(code, int) else str(code).removeprefix("STATUS_CODE_"),
        resource=resource,
    )


_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def _get(obj: Mapping[str, Any], key: str) -> Any:
    value = obj.get(key)
    return obj.get(_snake(key)) if value is None else value


def _attributes(items: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {str(kv["key"]): _value(kv.get("value") or {}) for kv in items or []}


def _value(value: Mapping[str, Any]) -> Any:
    # Phoenix and protobuf's JSON printer spell out every field with nulls: take the one that is set.
    for key in ("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue"):
        found = _get(value, key)
        if found is None:
            continue
        if key == "intValue":
            return int(found)
        if key == "doubleValue":
            return float(found)
        if key == "arrayValue":
            return [_value(v) for v in found.get("values") or []]
        if key == "kvlistValue":
            return _attributes(found.get("values"))
        return found
    return None


def _hex_id(raw: Any, size: int) -> str:
    text = str(raw or "")
    if len(text) == 2 * size and set(text) <= _HEX:
        return text.lower()
    try:  # protobuf's own JSON printer writes bytes fields in base64
        decoded = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return text.lower()
    return decoded.hex() if len(decoded) == size else text.lower()
