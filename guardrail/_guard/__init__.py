"""The guard: reads an answer, has it scored, decides under a policy, and acts.

- ``guard``: ``Guard`` with its sync and async twins (``check``/``acheck``, ``enforce``/``aenforce``...).
- ``reading``: how the guard reads an answer before scoring, built from ``structured`` (JSON and tool
  calls read as prose), ``normalize`` (disguises undone) and ``language`` (text the scorer cannot read).
- ``streaming``: guarded streams, checked window by window, never leaking a blocked window.
- ``rewrite``: the rewrite strategies (re-ask, redact).
- ``policyset``: ``PolicySet``, one guard per deployment sharing one scorer.
- ``shared``: the process-wide guards integrations use when given none (``shared_guard``).

Depends on the policy language, scoring, telemetry and the kernel.
"""
