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
_MAX_NS = 2**63  # OTLP times are fixed64; past 2262 no datetime can show them


class MalformedSpans(ValueError):
    """A span document that does not have the shape its format requires; the message says where and what."""


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
    """The spans of one OTLP/JSON ``ExportTraceServiceRequest`` (camelCase or snake_case keys).

    Raises:
        MalformedSpans: A part of the document has the wrong type or an unreadable value.
    """
    for r, resource_spans in enumerate(_list(_get(document, "resourceSpans"), "resourceSpans")):
        where = f"resourceSpans[{r}]"
        resource_spans = _map(resource_spans, where)
        resource = _map(_get(resource_spans, "resource"), f"{where}.resource")
        attributes = _attributes(_get(resource, "attributes"), f"{where}.resource.attributes")
        scopes = _get(resource_spans, "scopeSpans") or _get(resource_spans, "instrumentationLibrarySpans")
        for s, scope_spans in enumerate(_list(scopes, f"{where}.scopeSpans")):
            inner = f"{where}.scopeSpans[{s}]"
            for n, span in enumerate(_list(_get(_map(scope_spans, inner), "spans"), f"{inner}.spans")):
                yield _decode_span(_map(span, f"{inner}.spans[{n}]"), attributes, f"{inner}.spans[{n}]")


def _decode_span(span: Mapping[str, Any], resource: dict[str, Any], where: str) -> SpanRecord:
    status = _get(span, "status")
    code = _map(status, f"{where}.status").get("code", 0) if not isinstance(status, str) else status
    events = []
    for n, event in enumerate(_list(_get(span, "events"), f"{where}.events")):
        event = _map(event, f"{where}.events[{n}]")
        events.append((str(event.get("name", "")), _attributes(_get(event, "attributes"), f"{where}.events[{n}]")))
    parent = _get(span, "parentSpanId")
    return SpanRecord(
        name=str(span.get("name", "")),
        trace_id=_hex_id(_get(span, "traceId"), 16),
        span_id=_hex_id(_get(span, "spanId"), 8),
        parent_id=_hex_id(parent, 8) if parent else None,
        start_ns=nanoseconds(_get(span, "startTimeUnixNano"), f"{where}.startTimeUnixNano"),
        end_ns=nanoseconds(_get(span, "endTimeUnixNano"), f"{where}.endTimeUnixNano"),
        attributes=_attributes(_get(span, "attributes"), f"{where}.attributes"),
        events=tuple(events),
        status=_STATUS.get(code, str(code)) if isinstance(code, int) else str(code).removeprefix("STATUS_CODE_"),
        resource=resource,
    )


def nanoseconds(raw: Any, where: str) -> int:
    """A time in ns since the epoch, as OTLP/JSON writes it (a decimal string or an integer); 0 when absent."""
    if raw is None or raw == "":
        return 0
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise MalformedSpans(f"{where} must be an integer of nanoseconds, got {kind(raw)}")
    try:
        value = int(raw)
    except ValueError:
        raise MalformedSpans(f"{where} must be an integer of nanoseconds, got {_short(raw)}") from None
    if not 0 <= value < _MAX_NS:
        raise MalformedSpans(f"{where} is {_short(value)} ns, outside 0 to 2**63 (the years 1970 to 2262)")
    return value


def kind(value: Any) -> str:
    """The JSON type of a decoded value, for messages: ``a number``, ``an object``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return f"a number ({_short(value)})"
    if isinstance(value, str):
        return f"a string ({_short(value)})"
    return "a list" if isinstance(value, list) else "an object" if isinstance(value, Mapping) else type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise MalformedSpans(f"{where} must be a list, got {kind(value)}")
    return value


def _map(value: Any, where: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedSpans(f"{where} must be an object, got {kind(value)}")
    return value


_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def _snake(key: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def _get(obj: Mapping[str, Any], key: str) -> Any:
    value = obj.get(key)
    return obj.get(_snake(key)) if value is None else value


def _attributes(items: Any, where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for n, kv in enumerate(_list(items, where)):
        kv = _map(kv, f"{where}[{n}]")
        if not isinstance(kv.get("key"), str):
            raise MalformedSpans(f"{where}[{n}].key must be a string, got {kind(kv.get('key'))}")
        out[kv["key"]] = _value(kv.get("value"), f"{where}[{n}] ({kv['key']})")
    return out


def _value(value: Any, where: str) -> Any:
    # Phoenix and protobuf's JSON printer spell out every field with nulls: take the one that is set.
    value = _map(value, where)
    for key in ("stringValue", "boolValue", "intValue", "doubleValue", "arrayValue", "kvlistValue", "bytesValue"):
        found = _get(value, key)
        if found is None:
            continue
        try:
            if key == "intValue" and not isinstance(found, bool):
                return int(found)
            if key == "doubleValue" and not isinstance(found, bool):
                return float(found)
        except (TypeError, ValueError):
            raise MalformedSpans(f"{where}: {key} must be a number, got {kind(found)}") from None
        if key == "arrayValue":
            items = _list(_map(found, where).get("values"), f"{where}.arrayValue.values")
            return [_value(v, f"{where}.arrayValue.values[{n}]") for n, v in enumerate(items)]
        if key == "kvlistValue":
            return _attributes(_map(found, where).get("values"), f"{where}.kvlistValue.values")
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
