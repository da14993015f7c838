"""The policy lifecycle on top of the guard: policy tests with rule coverage, and thresholds tuned
from a deployment's own labelled answers (``guardrail policy test``, ``guardrail policy tune``)."""
