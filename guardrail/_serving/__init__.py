"""Serving: the scoring service many apps share.

- ``service``: ``ServeSettings`` and ``ScoringService`` (one shared, micro-batched scorer; a guard per policy).
- ``app``: the HTTP API (Starlette): ``/v1/score``, ``/v1/check``, LiteLLM's Generic Guardrail route, probes.
- ``rayserve``: the same API as a Ray Serve application with a scorer deployment that scales.
- ``rescore``: re-scoring a large JSONL on Ray Data actors (``guardrail score --ray``).

Depends on the guard, scoring, the policy language, telemetry and the kernel; Ray only when used.
"""
