"""``guardrail audit``: read guardrail spans back from a file or Phoenix and summarise them.

Sources:

- a file of spans: OTLP/JSON documents (one per line as ``telemetry.configure(exporter="file")`` and
  the Collector's file exporter write them, or one whole document), the JSON objects the SDK's
  console exporter prints, or a Phoenix REST ``{"data": [...]}`` body;
- a Phoenix server (``http(s)://...`` with a project name), read through its REST API.

A check is a ``guardrail.check`` span of role ``answer`` (a rewrite's re-checks are counted apart);
its ``guardrail.enforce`` parent, when there is one, says what was finally delivered. Rendering
lives in ``_report.py``; this module is stdlib and numpy only.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.error import HTTPError, URLError
from urllib.parse import quote, urlencode
from urllib.request import Request, urlopen

from guardrail._exceptions import AuditError
from guardrail._telemetry.checks import ENFORCE_SPAN, SPAN_NAME
from guardrail._telemetry.otlpjson import MalformedSpans, SpanRecord, decode, is_otlp, kind, nanoseconds
from guardrail._values import VALUES

DECISIONS = ("allow", "log", "rewrite", "block")
NO_DEPLOYMENT = "(none)"
BUCKETS = {"1m": 60, "5m": 300, "15m": 900, "1h": 3600, "6h": 21600, "1d": 86400, "1w": 604800}
"""Drift bucket sizes, in seconds, by the names ``--bucket`` takes."""
PHOENIX_PAGE = 1000  # the most Phoenix's span endpoint returns per page


@dataclass(frozen=True)
class Shadow:
    """What a shadow candidate decided beside the enforced policy."""

    policy: str
    """``name vVERSION`` of the candidate."""
    decision: str
    agrees: bool
    violations: tuple[str, ...]


@dataclass(frozen=True)
class Check:
    """One checked answer as the audit sees it."""

    time_ns: int
    trace_id: str
    policy_name: str
    policy_version: str
    policy_hash: str
    deployment: str
    decision: str
    final_decision: str
    scores: tuple[float, ...] | None
    """The ten scores in ``VALUES`` order; ``None`` when scoring failed."""
    violations: tuple[tuple[str, float | None], ...] = ()
    """(rule, margin) per violated rule; margin ``None`` for spans written before margins were recorded."""
    error: str | None = None
    prompt: str | None = None
    response: str | None = None
    output: str | None = None
    rewrite: str | None = None
    """How a rewrite went, e.g. ``reask: 2 attempts, accepted``."""
    decision_id: str | None = None
    intended: str | None = None
    """What the policy's rules asked for (``decision`` differs in shadow mode)."""
    shadow: Shadow | None = None
    """The shadow candidate's decision on the same scores, when the policy named one."""

    @property
    def policy(self) -> str:
        """``name vVERSION``."""
        return f"{self.policy_name} v{self.policy_version}"


@dataclass
class Audit:
    """Every check read from a source, oldest first, with the counts the report shows."""

    source: str
    checks: list[Check]
    rechecks: int = 0
    """Re-checks a rewrite made (revisions, sentences), not counted as checks."""
    policies: dict[tuple[str, str, str], tuple[int, int, int]] = field(default_factory=dict)
    """(name, version, hash) -> (checks, first ns, last ns)."""

    def decisions_by(self) -> list[tuple[str, str, Counter[str]]]:
        """(policy, deployment, final decisions counted) rows, most checks first."""
        groups: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        for check in self.checks:
            groups[check.policy, check.deployment][check.final_decision] += 1
        rows = [(p, d, c) for (p, d), c in groups.items()]
        return sorted(rows, key=lambda row: (-sum(row[2].values()), row[0], row[1]))

    def top_rules(self, limit: int = 10) -> list[tuple[str, int, float | None]]:
        """(rule, checks violating it, median margin) for the most violated rules."""
        margins: dict[str, list[float]] = defaultdict(list)
        counts: Counter[str] = Counter()
        for check in self.checks:
            for rule, margin in check.violations:
                counts[rule] += 1
                if margin is not None:
                    margins[rule].append(margin)
        return [
            (rule, n, statistics.median(margins[rule]) if margins[rule] else None)
            for rule, n in counts.most_common(limit)
        ]

    def disagreements(self) -> list[tuple[str, str, int, int, Counter[str], Counter[str]]]:
        """Per (deployment, candidate): checks, disagreements, their directions and the rules behind them.

        A direction reads ``enforced -> candidate`` (``allow -> block``); a rule behind a disagreement
        is one that fired under the candidate only (``+rule``) or under the enforced policy only (``-rule``).
        """
        groups: dict[tuple[str, str], list[Check]] = defaultdict(list)
        for check in self.checks:
            if check.shadow is not None:
                groups[check.deployment, check.shadow.policy].append(check)
        rows = []
        for (deployment, candidate), checks in sorted(groups.items()):
            directions: Counter[str] = Counter()
            rules: Counter[str] = Counter()
            for check in checks:
                assert check.shadow is not None
                if check.shadow.agrees:
                    continue
                directions[f"{check.intended or check.decision} -> {check.shadow.decision}"] += 1
                enforced = {rule for rule, _ in check.violations}
                rules.update(f"+{r}" for r in set(check.shadow.violations) - enforced)
                rules.update(f"-{r}" for r in enforced - set(check.shadow.violations))
            rows.append((deployment, candidate, len(checks), sum(directions.values()), directions, rules))
        return rows

    def deployments(self) -> list[str]:
        """Deployments by number of checks, most first."""
        return [d for d, _ in Counter(c.deployment for c in self.checks).most_common()]

    def scored(self, deployment: str | None = None) -> list[Check]:
        """Checks with scores, optionally of one deployment."""
        return [c for c in self.checks if c.scores is not None and deployment in (None, c.deployment)]


def load(source: str, project: str | None = None) -> Audit:
    """Read the checks from a span file or a Phoenix base URL (which needs ``project``).

    Raises:
        AuditError: The file is missing, malformed or holds no guardrail spans, or Phoenix cannot be read.
    """
    if source.startswith(("http://", "https://")):
        if not project:
            raise AuditError(f"{source} is a Phoenix URL: name the project with --project")
        spans = list(phoenix_spans(source, project))
        where = f"Phoenix project {project!r} at {source}"
    else:
        if project:
            raise AuditError("--project goes with a Phoenix URL, not with a span file")
        spans = list(read_span_file(Path(source)))
        where = source
    try:
        audit = build(spans, where)
    except MalformedSpans as exc:
        raise AuditError(f"{where}: {exc}") from exc
    if not audit.checks:
        raise AuditError(f"{where}: no guardrail.check spans found ({len(spans)} spans read)")
    return audit


# -- sources ----------------------------------------------------------------------------------


def read_span_file(path: Path) -> Iterator[SpanRecord]:
    """Spans from a file of OTLP/JSON documents, console-exporter objects or a Phoenix body.

    Raises:
        AuditError: The file cannot be read, is empty, is not UTF-8 JSON, or a document in it is
            malformed; the message names the file, the line of the document and what is wrong.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise AuditError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        raise AuditError(f"{path}: not UTF-8 text (byte 0x{byte:02x} at offset {exc.start}: {exc.reason})") from exc
    if not text.strip():
        raise AuditError(f"{path}: the file is empty; expected OTLP/JSON span documents, one per line")
    decoder = json.JSONDecoder()
    position, length, line, counted = 0, len(text), 1, 0
    while True:
        while position < length and text[position].isspace():
            position += 1
        if position >= length:
            return
        line += text.count("\n", counted, position)
        counted = position
        try:
            document, position = decoder.raw_decode(text, position)
            spans = list(spans_in(document, top=True))
        except json.JSONDecodeError as exc:
            raise AuditError(f"{path}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
        except RecursionError as exc:  # json and the readers below both recurse
            raise AuditError(f"{path}:{line}: JSON nested too deeply to be a span document") from exc
        except MalformedSpans as exc:
            raise AuditError(f"{path}:{line}: {exc}") from exc
        yield from spans


def spans_in(document: Any, *, top: bool = False) -> Iterator[SpanRecord]:
    """The spans in one decoded JSON value, whichever of the known forms it takes.

    ``top``: ``document`` is a whole document of a file, which must be a JSON object or list.
    Objects of no known form are skipped.

    Raises:
        MalformedSpans: A span (or the document) does not have the shape of its form.
    """
    if top and not isinstance(document, (list, Mapping)):
        raise MalformedSpans(f"expected a JSON object or list of spans, got {kind(document)}")
    if isinstance(document, list):
        for item in document:
            yield from spans_in(item)
    elif isinstance(document, Mapping):
        if is_otlp(document):
            yield from decode(document)
        elif isinstance(document.get("data"), list):
            yield from spans_in(document["data"])
        elif isinstance(document.get("attributes"), list) and "span_id" in document:
            yield from decode({"resource_spans": [{"scope_spans": [{"spans": [document]}]}]})  # Phoenix otlpv1
        elif "name" in document and isinstance(document.get("context"), Mapping):
            yield _flat_span(document)


def _flat_span(obj: Mapping[str, Any]) -> SpanRecord:
    # The SDK console exporter's and Phoenix REST's shape: flat attributes, ids in context, ISO times.
    context = obj["context"]
    name = str(obj["name"])
    attributes = dict(_flat_map(obj.get("attributes"), name, "attributes"))
    if obj.get("span_kind") and "openinference.span.kind" not in attributes:
        attributes["openinference.span.kind"] = obj["span_kind"]  # Phoenix moves it out of the attributes
    status = obj.get("status_code") or _flat_map(obj.get("status"), name, "status").get("status_code") or "UNSET"
    resource = obj.get("resource") or {}
    events = obj.get("events") or []
    if not isinstance(events, list):
        raise MalformedSpans(f"span {name!r}: events must be a list, got {kind(events)}")
    event_maps = [_flat_map(e, name, "event") for e in events]
    return SpanRecord(
        name=name,
        trace_id=_bare_id(context.get("trace_id")),
        span_id=_bare_id(context.get("span_id")),
        parent_id=_bare_id(obj.get("parent_id")) or None,
        start_ns=_iso_ns(obj.get("start_time"), f"span {name!r}: start_time"),
        end_ns=_iso_ns(obj.get("end_time"), f"span {name!r}: end_time"),
        attributes=attributes,
        events=tuple(
            (str(e.get("name", "")), dict(_flat_map(e.get("attributes"), name, "attributes"))) for e in event_maps
        ),
        status=str(status),
        resource=dict(_flat_map(resource.get("attributes"), name, "resource")) if isinstance(resource, Mapping) else {},
    )


def _flat_map(value: Any, span: str, what: str) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise MalformedSpans(f"span {span!r}: {what} must be an object, got {kind(value)}")
    return value


def _bare_id(raw: Any) -> str:
    return str(raw or "").lower().removeprefix("0x")


def _iso_ns(raw: Any, where: str) -> int:
    if not raw:
        return 0
    try:
        stamp = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        return nanoseconds(int(stamp.timestamp() * 1_000_000) * 1000, where)
    except (ValueError, OverflowError) as exc:
        if isinstance(exc, MalformedSpans):
            raise
        raise MalformedSpans(f"{where} must be an ISO 8601 time, got {kind(raw)}") from None


def phoenix_spans(base_url: str, project: str) -> Iterator[SpanRecord]:
    """The guardrail spans of a Phoenix project, page by page (``PHOENIX_API_KEY`` if auth is on)."""
    headers = {"accept": "application/json"}
    if os.environ.get("PHOENIX_API_KEY"):
        headers["authorization"] = f"Bearer {os.environ['PHOENIX_API_KEY']}"
    base = base_url.rstrip("/")
    cursor: str | None = None
    while True:
        params = [("limit", str(PHOENIX_PAGE)), ("name", SPAN_NAME), ("name", ENFORCE_SPAN)]
        if cursor:
            params.append(("cursor", cursor))
        url = f"{base}/v1/projects/{quote(project, safe='')}/spans?{urlencode(params)}"
        try:
            with urlopen(Request(url, headers=headers), timeout=60) as reply:
                body = json.load(reply)
            if not isinstance(body, Mapping):
                raise AuditError(f"Phoenix at {base_url} answered {kind(body)} for {url}, not a page of spans")
        except HTTPError as exc:
            exc.close()  # an HTTPError holds the open response
            if exc.code == 404:
                raise AuditError(f"Phoenix at {base_url} has no project {project!r} (or no spans in it yet)") from exc
            raise AuditError(f"Phoenix at {base_url} answered {exc.code} {exc.reason} for {url}") from exc
        except (URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AuditError(f"cannot reach Phoenix at {base_url}: {reason}") from exc
        except (ValueError, RecursionError) as exc:  # not JSON (or not UTF-8)
            raise AuditError(f"Phoenix at {base_url} answered with no JSON page of spans for {url}: {exc}") from exc
        page = body.get("data") or []
        try:
            yield from spans_in(page, top=True)
        except MalformedSpans as exc:
            raise AuditError(f"Phoenix at {base_url}, {url}: {exc}") from exc
        cursor = body.get("next_cursor")
        if not cursor or not page:
            return


# -- from spans to checks ---------------------------------------------------------------------


def build(spans: Iterable[SpanRecord], source: str) -> Audit:
    """Turn spans into checks: one per ``guardrail.check`` span of role ``answer``, oldest first."""
    unique = {(s.trace_id, s.span_id): s for s in spans}  # a file may hold a span twice
    enforce = {s.span_id: s for s in unique.values() if s.name == ENFORCE_SPAN}
    checks, rechecks = [], 0
    for span in unique.values():
        if span.name != SPAN_NAME:
            continue
        if span.attributes.get("guardrail.check.role", "answer") != "answer":
            rechecks += 1
            continue
        parent = enforce.get(span.parent_id or "")
        checks.append(_check(span, parent))
    checks.sort(key=lambda c: c.time_ns)
    policies: dict[tuple[str, str, str], tuple[int, int, int]] = {}
    for check in checks:
        key = (check.policy_name, check.policy_version, check.policy_hash)
        n, first, last = policies.get(key, (0, check.time_ns, check.time_ns))
        policies[key] = (n + 1, min(first, check.time_ns), max(last, check.time_ns))
    return Audit(source, checks, rechecks, policies)


def _check(span: SpanRecord, parent: SpanRecord | None) -> Check:
    attrs = span.attributes
    outer = parent.attributes if parent is not None else {}

    def malformed(key: str, problem: str) -> MalformedSpans:
        return MalformedSpans(f"span {span.span_id or '?'} ({span.name}): {key} {problem}")

    raw_scores = [attrs.get(f"guardrail.value.{v}") for v in VALUES]
    # Every score present is checked, also when others are missing: a bad one never passes unseen.
    for name, score in zip(VALUES, raw_scores):
        if score is None:
            continue
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise malformed(f"guardrail.value.{name}", f"is {score!r}, not a number")
        if not (math.isfinite(score) and -1.0 <= score <= 1.0):
            raise malformed(f"guardrail.value.{name}", f"is {float(score)!r}, not a score in [-1, 1]")
    numeric = all(s is not None for s in raw_scores)
    scores = tuple(float(s) for s in raw_scores) if numeric else None  # type: ignore[arg-type]
    rules, margins = attrs.get("guardrail.violations") or [], attrs.get("guardrail.violation_margins") or []
    for key, value in (("guardrail.violations", rules), ("guardrail.violation_margins", margins)):
        if not isinstance(value, list):
            raise malformed(key, f"must be a list, got {kind(value)}")
    if any(isinstance(m, float) and not math.isfinite(m) for m in margins):
        raise malformed("guardrail.violation_margins", "must be finite numbers")
    margins = [*margins, *[None] * (len(rules) - len(margins))]
    decision = str(attrs.get("guardrail.decision", "unknown"))
    rewrite = None
    if "guardrail.rewrite.strategy" in outer:
        outcome = (
            "accepted"
            if outer.get("guardrail.rewrite.accepted")
            else f"fell back to {outer.get('guardrail.rewrite.fallback')}"
        )
        rewrite = (
            f"{outer['guardrail.rewrite.strategy']}: {outer.get('guardrail.rewrite.attempts', 0)} attempts, {outcome}"
        )
    return Check(
        time_ns=span.start_ns,
        trace_id=span.trace_id,
        policy_name=str(attrs.get("guardrail.policy.name", "?")),
        policy_version=str(attrs.get("guardrail.policy.version", "?")),
        policy_hash=str(attrs.get("guardrail.policy.hash", "")),
        deployment=str(attrs.get("guardrail.deployment") or outer.get("guardrail.deployment") or NO_DEPLOYMENT),
        decision=decision,
        final_decision=str(outer.get("guardrail.final_decision", decision)),
        scores=scores,
        violations=tuple((str(r), float(m) if isinstance(m, (int, float)) else None) for r, m in zip(rules, margins)),
        error=attrs.get("guardrail.error"),
        prompt=attrs.get("guardrail.prompt", outer.get("guardrail.prompt")),
        response=attrs.get("guardrail.response", outer.get("guardrail.response")),
        output=outer.get("guardrail.output"),
        rewrite=rewrite,
        decision_id=attrs.get("guardrail.decision_id"),
        intended=attrs.get("guardrail.intended_decision"),
        shadow=_shadow(attrs, malformed),
    )


def _shadow(attrs: Mapping[str, Any], malformed: Any) -> Shadow | None:
    if "guardrail.shadow.decision" not in attrs:
        return None
    violations = attrs.get("guardrail.shadow.violations") or []
    if not isinstance(violations, list):
        raise malformed("guardrail.shadow.violations", f"must be a list, got {kind(violations)}")
    name = attrs.get("guardrail.shadow.policy.name", "?")
    return Shadow(
        policy=f"{name} v{attrs.get('guardrail.shadow.policy.version', '?')}",
        decision=str(attrs["guardrail.shadow.decision"]),
        agrees=bool(attrs.get("guardrail.shadow.agrees", False)),
        violations=tuple(str(v) for v in violations),
    )


# -- numbers the figures plot -------------------------------------------------------------------


def mean_profile(checks: list[Check]) -> list[float]:
    """Mean score per value over checks with scores, in ``VALUES`` order."""
    rows = [c.scores for c in checks if c.scores is not None]
    return [statistics.fmean(col) for col in zip(*rows)] if rows else [0.0] * len(VALUES)


def pca(checks: list[Check]) -> tuple[Any, Any, Any]:
    """Project scored checks on their first two principal components.

    Returns:
        (points n x 2, loadings 10 x 2, explained variance ratio of the two components).
    """
    import numpy as np

    matrix = np.array([c.scores for c in checks if c.scores is not None], dtype=float)
    centred = matrix - matrix.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    variance = singular**2
    total = float(variance.sum()) or 1.0
    axes = components[:2]
    # A component's sign is arbitrary: point each one the way its largest loading points, so reruns agree.
    for row in axes:
        if row[np.argmax(np.abs(row))] < 0:
            row *= -1
    ratio = variance[:2] / total
    if len(ratio) < 2:
        axes, ratio = np.vstack([axes, np.zeros((2 - len(axes), len(VALUES)))]), np.pad(ratio, (0, 2 - len(ratio)))
    return centred @ axes.T, axes.T, ratio


def pick_bucket(checks: list[Check], bucket: str | None = None) -> int:
    """Drift bucket in seconds: the named one, else the smallest leaving at most 40 buckets."""
    if bucket is not None:
        if bucket not in BUCKETS:
            raise AuditError(f"unknown bucket {bucket!r}; use one of: {', '.join(BUCKETS)}")
        return BUCKETS[bucket]
    span_s = (checks[-1].time_ns - checks[0].time_ns) / 1e9 if checks else 0
    return next((size for size in BUCKETS.values() if span_s / size <= 40), max(BUCKETS.values()))


def drift(checks: list[Check], bucket_s: int) -> tuple[list[datetime], list[list[float]]]:
    """(bucket start times, mean scores per bucket in ``VALUES`` order) over scored checks."""
    groups: dict[int, list[Check]] = defaultdict(list)
    for check in checks:
        if check.scores is not None:
            groups[int(check.time_ns // 1_000_000_000 // bucket_s)].append(check)
    keys = sorted(groups)
    times = [datetime.fromtimestamp(k * bucket_s, tz=timezone.utc) for k in keys]
    return times, [mean_profile(groups[k]) for k in keys]
