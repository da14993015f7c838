"""Telemetry: the OpenTelemetry spans and metrics the guard records. It observes and decides nothing.

- ``checks``: the spans and metrics of one check (``CheckTelemetry``).
- ``genai``: the spans of a guarded model call, for the integrations (GenAI semantic conventions).
- ``otlpjson``: reading OTLP JSON span files back, for the audit report.
- ``decisionlog``: the decision log, one JSON line per decision in a size-rotated file (``DecisionLog``).

Depends on the kernel only.
"""
