"""The audit report: recorded decisions in, a self-contained HTML report out.

- ``load``: reading checks from OTLP span files or a Phoenix project; drift, profiles.
- ``report``: rendering the report.

Depends on telemetry (span names, OTLP reading) and the kernel.
"""
