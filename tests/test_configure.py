"""``guardrail.telemetry.configure``: exporters, OTLP over HTTP to a loopback collector, env vars, failures."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from guardrail import Guard, Policy, ValueVector
from guardrail._audit.load import read_span_file
from guardrail.telemetry import EXPORT_FAILED, CountingSpanExporter, Telemetry, configure
from guardrail.testing import FakeScorer

POLICY = Policy(name="cfg", version="1", thresholds={"benevolence": {"min": -0.3}})
SCORER = FakeScorer({"bad": ValueVector(benevolence=-0.9)})
ENV = ("OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER",
       "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_ENDPOINT",
       "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_SDK_DISABLED")  # fmt: skip


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)


def guard_for(telemetry: Telemetry) -> Guard:
    return Guard(
        POLICY, scorer=SCORER, tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )


class Collector:
    """A loopback OTLP/HTTP collector: records each request's path, headers and decoded body."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[str, dict[str, str], Any]] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                message: Any = (
                    ExportTraceServiceRequest() if self.path.endswith("traces") else ExportMetricsServiceRequest()
                )
                message.ParseFromString(body)
                collector.requests.append((self.path, dict(self.headers), message))
                self.send_response(status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # keep the test output clean
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def spans(self) -> list[Any]:
        return [
            span
            for path, _, message in self.requests if path == "/v1/traces"
            for rs in message.resource_spans for ss in rs.scope_spans for span in ss.spans
        ]  # fmt: skip

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    yield server
    server.close()


# -- exporters --------------------------------------------------------------------------------


def test_otlp_http_to_a_collector(collector: Collector) -> None:
    telemetry = configure(
        "svc", endpoint=collector.url, headers={"authorization": "Bearer k"}, project="proj", set_global=False
    )
    assert telemetry.exporter == "otlp"
    guard = guard_for(telemetry)
    guard.check("bad", metadata={"deployment": "bot"})
    guard.enforce("fine")
    telemetry.shutdown()
    names = sorted(s.name for s in collector.spans())
    assert names == ["guardrail.check", "guardrail.check", "guardrail.enforce"]
    paths = {path for path, _, _ in collector.requests}
    assert paths == {"/v1/traces", "/v1/metrics"}
    assert all(headers.get("authorization") == "Bearer k" for _, headers, _ in collector.requests)
    [trace_request] = [m for p, _, m in collector.requests if p == "/v1/traces"]
    resource = {kv.key: kv.value.string_value for kv in trace_request.resource_spans[0].resource.attributes}
    assert resource["service.name"] == "svc"
    assert resource["openinference.project.name"] == "proj"
    metric_names = {
        metric.name
        for p, _, m in collector.requests if p == "/v1/metrics"
        for rm in m.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
    }  # fmt: skip
    assert {"guardrail.checks", "guardrail.check.duration", "guardrail.value.score"} <= metric_names


def test_endpoint_from_the_environment(collector: Collector, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    telemetry = configure(metrics=False, set_global=False)
    guard_for(telemetry).check("bad")
    telemetry.shutdown()
    assert [(path, headers.get("x-tenant")) for path, headers, _ in collector.requests] == [("/v1/traces", "acme")]
    assert len(collector.spans()) == 1


def test_full_traces_url_is_not_doubled(collector: Collector) -> None:
    telemetry = configure(endpoint=collector.url + "/v1/traces", metrics=False, set_global=False)
    guard_for(telemetry).check("bad")
    telemetry.shutdown()
    assert [path for path, _, _ in collector.requests] == ["/v1/traces"]


def test_failed_exports_are_counted() -> None:
    rejecting = Collector(status=400)  # not retried: the exporter gives up at once
    reader = InMemoryMetricReader()
    try:
        telemetry = configure(endpoint=rejecting.url, metrics=False, metric_readers=[reader], set_global=False)
        guard_for(telemetry).check_many(["a", "b", "c"])
        telemetry.force_flush()
        data = reader.get_metrics_data()
        telemetry.shutdown()
    finally:
        rejecting.close()
    failed = [
        point
        for rm in data.resource_metrics for sm in rm.scope_metrics for metric in sm.metrics
        if metric.name == EXPORT_FAILED for point in metric.data.data_points
    ]  # fmt: skip
    assert [(p.value, dict(p.attributes)) for p in failed] == [(3, {"guardrail.telemetry.exporter": "otlp"})]


class Exploding(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        raise ConnectionResetError("gone")


def test_counting_exporter_counts_exceptions_and_reraises() -> None:
    reader = InMemoryMetricReader()
    counting = CountingSpanExporter(Exploding(), MeterProvider(metric_readers=[reader]), "custom")
    with pytest.raises(ConnectionResetError):
        counting.export([object(), object()])  # type: ignore[list-item]
    [metric] = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
    assert metric.name == EXPORT_FAILED
    assert [p.value for p in metric.data.data_points] == [2]


def test_file_exporter_writes_otlp_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "out" / "spans.jsonl"
    telemetry = configure("svc", exporter="file", path=path, project="p", set_global=False)
    guard = guard_for(telemetry)
    guard.check("bad", "q", metadata={"deployment": "bot"})
    telemetry.force_flush()
    guard.check("fine")
    telemetry.shutdown()
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 2 and all("resourceSpans" in json.loads(line) for line in lines)
    spans = list(read_span_file(path))
    assert [s.name for s in spans] == ["guardrail.check", "guardrail.check"]
    first = spans[0]
    assert first.attributes["guardrail.decision"] == "block"
    assert first.attributes["guardrail.deployment"] == "bot"
    assert first.attributes["guardrail.value.benevolence"] == -0.9
    assert first.resource["service.name"] == "svc" and first.resource["openinference.project.name"] == "p"
    assert len(first.events) == 10 and len(first.trace_id) == 32 and len(first.span_id) == 16


def test_console_exporter_output_reads_back(capfd: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    telemetry = configure(exporter="console", metrics=False, set_global=False)
    guard_for(telemetry).check("bad", metadata={"tenant": "t"})
    telemetry.shutdown()
    path = tmp_path / "console.json"
    path.write_text(capfd.readouterr().out, encoding="utf-8")
    [span] = list(read_span_file(path))
    assert span.name == "guardrail.check"
    assert span.attributes["guardrail.deployment"] == "t"
    assert span.start_ns > 0 and len(span.span_id) == 16


def test_none_exporter_keeps_metric_readers() -> None:
    reader = InMemoryMetricReader()
    telemetry = configure(exporter="none", metric_readers=[reader], set_global=False)
    guard_for(telemetry).check("bad")
    names = {m.name for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert "guardrail.checks" in names
    telemetry.shutdown()


# -- environment and arguments ----------------------------------------------------------------


def resource(telemetry: Telemetry) -> dict[str, Any]:
    attributes = dict(telemetry.tracer_provider.resource.attributes)
    telemetry.shutdown()
    return attributes


def test_service_name_default_env_and_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resource(configure(exporter="none", set_global=False))["service.name"] == "value-guardrail"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-env")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod,openinference.project.name=envproj")
    attributes = resource(configure(exporter="none", set_global=False))
    assert (attributes["service.name"], attributes["deployment.environment"]) == ("from-env", "prod")
    assert attributes["openinference.project.name"] == "envproj"
    attributes = resource(configure("arg", exporter="none", project="argproj", set_global=False))
    assert (attributes["service.name"], attributes["openinference.project.name"]) == ("arg", "argproj")


def test_exporter_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert configure(set_global=False).exporter == "none"


def test_sdk_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert configure(exporter="otlp", set_global=False).exporter == "none"


@pytest.mark.parametrize(
    ("kwargs", "env", "message"),
    [
        ({"exporter": "zipkin"}, {}, "exporter='zipkin' is not supported; use one of: otlp, console, file, none"),
        ({}, {"OTEL_TRACES_EXPORTER": "jaeger"}, "OTEL_TRACES_EXPORTER='jaeger' is not supported"),
        ({"protocol": "http/json"}, {}, "protocol='http/json' is not supported; use one of: http/protobuf, grpc"),
        ({}, {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "OTEL_EXPORTER_OTLP_PROTOCOL='http/json' is not supported"),
        ({"exporter": "file"}, {}, 'exporter="file" needs path='),
    ],
)
def test_bad_arguments_name_the_input(
    monkeypatch: pytest.MonkeyPatch, kwargs: dict[str, Any], env: dict[str, str], message: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        configure(set_global=False, **kwargs)


@pytest.mark.parametrize(
    ("protocol", "module", "package"),
    [("http/protobuf", "opentelemetry.exporter.otlp.proto.http.trace_exporter", "opentelemetry-exporter-otlp-proto-http"),
     ("grpc", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", "opentelemetry-exporter-otlp-proto-grpc")],
)  # fmt: skip
def test_missing_exporter_package_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, protocol: str, module: str, package: str
) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # as if the package were not installed
    with pytest.raises(ImportError, match=rf"needs {package}: pip install 'value-guardrail\[otlp\]'"):
        configure(protocol=protocol, metrics=False, set_global=False)  # type: ignore[arg-type]


_GLOBAL = """
import sys
from guardrail import Guard, Policy
from guardrail.telemetry import configure
from guardrail.testing import FakeScorer
telemetry = configure("global-svc", exporter="file", path=sys.argv[1])
Guard(Policy(name="g"), scorer=FakeScorer()).check("hello")   # no provider passed: the global one
telemetry.shutdown()
"""


def test_set_global_serves_a_guard_without_providers(tmp_path: Path) -> None:
    # A subprocess: the global providers can be set once per process.
    path = tmp_path / "spans.jsonl"
    subprocess.run([sys.executable, "-c", _GLOBAL, str(path)], check=True, timeout=120)
    [span] = list(read_span_file(path))
    assert (span.name, span.resource["service.name"]) == ("guardrail.check", "global-svc")
