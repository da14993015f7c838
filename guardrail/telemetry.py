"""One-call OpenTelemetry setup for applications that have none: ``configure()``.

The guard itself only uses the OpenTelemetry API (spans and metrics cost nothing until an SDK is
set up). This module is the one place that sets up the SDK: a ``TracerProvider`` with a
``BatchSpanProcessor`` and a ``MeterProvider``, exporting over OTLP (HTTP or gRPC), to the console,
or to an OTLP/JSON lines file that ``guardrail audit`` reads without any backend.

Example:
    >>> from guardrail import Guard
    >>> from guardrail.telemetry import configure
    >>> telemetry = configure("support-bot", endpoint="http://127.0.0.1:6006", project="support")  # doctest: +SKIP
    >>> guard = Guard()  # spans and metrics go through the global providers configure() set  # doctest: +SKIP
    >>> telemetry.shutdown()  # flush what is queued before the process exits  # doctest: +SKIP

The standard variables apply where an argument is left out: ``OTEL_SERVICE_NAME``,
``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER``,
``OTEL_EXPORTER_OTLP_PROTOCOL`` (and its ``_TRACES_`` form), ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_EXPORTER_OTLP_TIMEOUT``, ``OTEL_BSP_*``,
``OTEL_METRIC_EXPORT_INTERVAL`` and ``OTEL_SDK_DISABLED``.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from opentelemetry import metrics as metrics_api
from opentelemetry import trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from guardrail._telemetry.otlpjson import encode_spans

__all__ = [
    "EXPORT_FAILED",
    "PROJECT_ATTRIBUTE",
    "CountingSpanExporter",
    "OtlpJsonFileExporter",
    "Telemetry",
    "configure",
]

logger = logging.getLogger(__name__)

Exporter = Literal["otlp", "console", "file", "none"]
OtlpProtocol = Literal["http/protobuf", "grpc"]

EXPORT_FAILED = "guardrail.telemetry.export.failed"
"""Counter of spans an exporter failed to deliver (after its own retries)."""
PROJECT_ATTRIBUTE = "openinference.project.name"
"""Resource attribute that names the Phoenix project the spans land in."""
DEFAULT_SERVICE_NAME = "value-guardrail"

_EXPORTERS = ("otlp", "console", "file", "none")
_PROTOCOLS = ("http/protobuf", "grpc")
_PACKAGES = {
    "http/protobuf": "opentelemetry-exporter-otlp-proto-http",
    "grpc": "opentelemetry-exporter-otlp-proto-grpc",
}


@dataclass(frozen=True)
class Telemetry:
    """What :func:`configure` set up; pass the providers to a ``Guard`` or flush them at exit.

    Example:
        >>> telemetry = configure(exporter="none", set_global=False)
        >>> guard_kwargs = {"tracer_provider": telemetry.tracer_provider, "meter_provider": telemetry.meter_provider}
        >>> telemetry.shutdown()
    """

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    exporter: Exporter
    """The span exporter in use (``none`` when only ``metric_readers`` or your own processors report)."""

    def force_flush(self, timeout_millis: float = 30_000) -> bool:
        """Export everything queued now; False if it did not finish within the timeout.

        Returns within about ``timeout_millis`` even when the endpoint is down or never answers.
        The SDK's OTLP exporters retry for their own timeout (``OTEL_EXPORTER_OTLP_TIMEOUT``, 10 s)
        whatever the flush's, so spans and metrics flush side by side on background threads and
        the call stops waiting at the deadline; a flush still running then ends on its own.

        Raises:
            ValueError: ``timeout_millis`` is not a positive number.
        """
        if isinstance(timeout_millis, bool) or not isinstance(timeout_millis, (int, float)) or not timeout_millis > 0:
            raise ValueError(f"timeout_millis must be a positive number of milliseconds, got {timeout_millis!r}")
        flushes = {"spans": self.tracer_provider.force_flush, "metrics": self.meter_provider.force_flush}
        done: dict[str, bool] = {}

        def flush(name: str) -> None:
            try:
                done[name] = bool(flushes[name](int(timeout_millis)))
            except Exception:  # the telemetry boundary: a failing flush is reported, never raised
                logger.exception("flushing the %s failed", name)
                done[name] = False

        # Daemon threads: a flush stuck on a dead endpoint must not keep the process from exiting.
        threads = [threading.Thread(target=flush, args=(name,), name=f"guardrail-flush-{name}", daemon=True)
                   for name in flushes]  # fmt: skip
        deadline = time.monotonic() + timeout_millis / 1000
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return all(done.get(name, False) for name in flushes)

    def shutdown(self) -> None:
        """Flush and stop both providers (call once, at exit)."""
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def configure(
    service_name: str | None = None,
    *,
    exporter: Exporter | None = None,
    protocol: OtlpProtocol | None = None,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    project: str | None = None,
    path: str | PathLike[str] | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    metrics: bool | None = None,
    metric_readers: Sequence[MetricReader] = (),
    set_global: bool = True,
) -> Telemetry:
    """Set up tracing and metrics export in one call.

    Args:
        service_name: ``service.name`` of the resource; default ``$OTEL_SERVICE_NAME``, else
            ``value-guardrail``.
        exporter: ``otlp``, ``console`` (stdout), ``file`` (OTLP/JSON lines at ``path``, what
            ``guardrail audit`` reads) or ``none``; default ``$OTEL_TRACES_EXPORTER``, else ``otlp``.
        protocol: OTLP transport, ``http/protobuf`` or ``grpc``; default
            ``$OTEL_EXPORTER_OTLP_TRACES_PROTOCOL``, ``$OTEL_EXPORTER_OTLP_PROTOCOL``, else ``http/protobuf``.
        endpoint: OTLP base URL, e.g. ``http://127.0.0.1:4318`` (``/v1/traces`` and ``/v1/metrics``
            are added for HTTP) or ``http://127.0.0.1:4317`` for gRPC; default: the exporters read
            ``OTEL_EXPORTER_OTLP_ENDPOINT`` (and the per-signal variables) themselves.
        headers: OTLP request headers (e.g. ``Authorization``); default ``$OTEL_EXPORTER_OTLP_HEADERS``.
        project: Phoenix project name, set as the resource attribute ``openinference.project.name``.
        path: The file for ``exporter="file"`` (appended to, one JSON document per line).
        resource_attributes: More resource attributes; they override ``$OTEL_RESOURCE_ATTRIBUTES``.
        metrics: Export metrics with the same exporter (not for ``file``); default: on unless
            ``$OTEL_METRICS_EXPORTER`` is ``none``. Phoenix takes traces only: pass False there.
        metric_readers: Extra metric readers (a Prometheus reader, an in-memory one for tests).
        set_global: Make these the global providers, which a ``Guard`` without its own uses.

    Returns:
        The providers, with ``force_flush()`` and ``shutdown()``.

    Raises:
        ValueError: An argument or environment variable names an unknown exporter or protocol, or
            ``exporter="file"`` comes without ``path``.
        ImportError: The OTLP exporter package is missing (install ``value-guardrail[otlp]``).

    Example:
        >>> telemetry = configure("my-app", exporter="console", set_global=False)  # doctest: +SKIP
    """
    exporter = _choice("exporter", exporter, "OTEL_TRACES_EXPORTER", "otlp", _EXPORTERS)  # type: ignore[assignment]
    if _env_true("OTEL_SDK_DISABLED"):
        exporter, metrics = "none", False
    if exporter == "file" and path is None:
        raise ValueError('exporter="file" needs path=, the file to write spans to')
    if exporter == "otlp":
        env_protocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        if not os.environ.get(env_protocol, "").strip():
            env_protocol = "OTEL_EXPORTER_OTLP_PROTOCOL"
        protocol = _choice("protocol", protocol, env_protocol, "http/protobuf", _PROTOCOLS)  # type: ignore[assignment]
    if metrics is None:
        metrics = os.environ.get("OTEL_METRICS_EXPORTER", "").strip().lower() != "none"

    resource = _resource(service_name, project, resource_attributes)
    readers = list(metric_readers)
    if metrics and exporter in ("otlp", "console"):
        readers.append(PeriodicExportingMetricReader(_metric_exporter(exporter, protocol, endpoint, headers)))
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    tracer_provider = TracerProvider(resource=resource)
    if exporter != "none":
        span_exporter = _span_exporter(exporter, protocol, endpoint, headers, path)
        counted = CountingSpanExporter(span_exporter, meter_provider, exporter)
        tracer_provider.add_span_processor(_batch_processor(counted, meter_provider))
    if set_global:
        trace.set_tracer_provider(tracer_provider)
        metrics_api.set_meter_provider(meter_provider)
    return Telemetry(tracer_provider, meter_provider, exporter)  # type: ignore[arg-type]


class OtlpJsonFileExporter(SpanExporter):
    """Appends spans to a file as OTLP/JSON, one ``ExportTraceServiceRequest`` per line.

    ``guardrail audit FILE`` reads these files, and so does the OpenTelemetry Collector's
    ``otlpjsonfile`` receiver.

    Example:
        >>> exporter = OtlpJsonFileExporter("spans.jsonl")  # doctest: +SKIP
    """

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._file = self.path.open("a", encoding="utf-8")

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Write one line holding ``spans``."""
        line = json.dumps(encode_spans(spans), separators=(",", ":"))
        with self._lock:
            if self._file.closed:
                return SpanExportResult.FAILURE
            self._file.write(line + "\n")
            self._file.flush()
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Lines are flushed as they are written."""
        return True

    def shutdown(self) -> None:
        """Close the file."""
        with self._lock:
            self._file.close()


class CountingSpanExporter(SpanExporter):
    """Wraps an exporter and counts the spans it failed to deliver in ``guardrail.telemetry.export.failed``.

    Args:
        exporter: The exporter doing the work.
        meter_provider: Where the counter lives.
        name: Recorded as the ``guardrail.telemetry.exporter`` attribute.
    """

    def __init__(self, exporter: SpanExporter, meter_provider: metrics_api.MeterProvider, name: str) -> None:
        self.exporter = exporter
        meter = meter_provider.get_meter("value-guardrail.telemetry")
        self._failed = meter.create_counter(
            EXPORT_FAILED, unit="{span}", description="Spans an exporter failed to deliver."
        )
        self._attributes = {"guardrail.telemetry.exporter": name}

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Export through the wrapped exporter, counting a failure (a result or an exception)."""
        try:
            result = self.exporter.export(spans)
        except Exception:
            self._failed.add(len(spans), self._attributes)
            raise  # the span processor logs it, as for any exporter
        if result is not SpanExportResult.SUCCESS:
            self._failed.add(len(spans), self._attributes)
        return result

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Flush the wrapped exporter."""
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        """Shut the wrapped exporter down."""
        self.exporter.shutdown()


# -- helpers ----------------------------------------------------------------------------------


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _choice(argument: str, value: str | None, env: str, default: str, allowed: Sequence[str]) -> str:
    if value is not None:
        source = f"{argument}={value!r}"
    else:
        value = os.environ.get(env, "").strip().lower() or default
        source = f"{env}={value!r}"
    if value not in allowed:
        raise ValueError(f"{source} is not supported; use one of: {', '.join(allowed)}")
    return value


def _resource(service_name: str | None, project: str | None, extra: Mapping[str, Any] | None) -> Resource:
    attributes: dict[str, Any] = dict(extra or {})
    if service_name is not None:
        attributes["service.name"] = service_name
    if project is not None:
        attributes[PROJECT_ATTRIBUTE] = project
    resource = Resource.create(attributes)  # merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME under these
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": DEFAULT_SERVICE_NAME}))
    return resource


def _batch_processor(exporter: SpanExporter, meter_provider: MeterProvider) -> BatchSpanProcessor:
    # The SDK's own processor metrics (queue size, spans dropped when the queue is full: turn them on
    # with OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED=true) then land beside ours; older SDKs lack the argument.
    if "meter_provider" in inspect.signature(BatchSpanProcessor).parameters:
        return BatchSpanProcessor(exporter, meter_provider=meter_provider)
    return BatchSpanProcessor(exporter)


def _otlp_module(protocol: str, signal: str) -> Any:
    import importlib

    transport = "http" if protocol == "http/protobuf" else "grpc"
    name = f"opentelemetry.exporter.otlp.proto.{transport}.{signal}_exporter"
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(
            f"OTLP export over {protocol} needs {_PACKAGES[protocol]}: pip install 'value-guardrail[otlp]'"
        ) from exc


def _signal_url(endpoint: str, signal: str) -> str:
    base = endpoint.rstrip("/")
    for suffix in ("/v1/traces", "/v1/metrics"):
        base = base.removesuffix(suffix)
    return f"{base}/v1/{signal}"


def _span_exporter(
    exporter: str, protocol: str | None, endpoint: str | None, headers: Mapping[str, str] | None, path: Any
) -> SpanExporter:
    if exporter == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if exporter == "file":
        return OtlpJsonFileExporter(path)
    module = _otlp_module(str(protocol), "trace")
    if protocol == "http/protobuf" and endpoint is not None:
        endpoint = _signal_url(endpoint, "traces")
    return module.OTLPSpanExporter(endpoint=endpoint, headers=dict(headers) if headers else None)


def _metric_exporter(
    exporter: str, protocol: str | None, endpoint: str | None, headers: Mapping[str, str] | None
) -> MetricExporter:
    if exporter == "console":
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    module = _otlp_module(str(protocol), "metric")
    if protocol == "http/protobuf" and endpoint is not None:
        endpoint = _signal_url(endpoint, "metrics")
    return module.OTLPMetricExporter(endpoint=endpoint, headers=dict(headers) if headers else None)  # type: ignore[no-any-return]
