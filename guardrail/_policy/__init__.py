"""The policy language: what a policy file says and how a score vector is decided under it.

- ``schema``: the pydantic models of a policy (thresholds, regions, actions, streaming, languages).
- ``loader``: reading YAML safely, ``extends``, errors with file and line, validation, the JSON schema.
- ``engine``: ``Engine.decide``, a score vector in, the decision and its violations with margins out.

Depends on the kernel only: no scorer, no guard, no telemetry.
"""
