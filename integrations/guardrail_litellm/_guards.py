"""Which :class:`~guardrail.Guard` checks a call: an explicit one, a policy, a policy set, or the process default.

Guards built here are the process-wide shared ones (:func:`guardrail.shared_guard`): one per policy,
over one scorer, so the model is in memory once per process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from guardrail import Guard, Policy, PolicySet, Scorer, shared_guard, shared_guard_built

PolicySource = str | os.PathLike[str] | Policy


def default_guard() -> Guard:
    """The process-default guard: ``$GUARDRAIL_POLICY`` (else ``default``) and the shipped model.

    Built once per process on first use (the model loads in about a second); thread-safe. It is
    :func:`guardrail.shared_guard`'s, so every integration in the process shares it.

    Example:
        >>> default_guard().policy.name  # doctest: +SKIP
        'default'
    """
    return shared_guard()


def shared_scorer() -> Scorer:
    """The scorer of :func:`default_guard` (built on first use), for guards with other policies."""
    return default_guard().scorer


def is_ready(guard: Guard | None, policy: PolicySource | None, policies: PolicySet | None) -> bool:
    """Whether :func:`resolve` can answer without loading a model (async callers build in a thread otherwise)."""
    return guard is not None or policies is not None or shared_guard_built(policy)


def resolve(
    guard: Guard | None,
    policy: PolicySource | None,
    policies: PolicySet | None,
    metadata: Mapping[str, Any] | None,
) -> Guard:
    """Pick the guard for one call; at most one of ``guard``, ``policy`` and ``policies`` may be given.

    Raises:
        ValueError: More than one of them was given.
        TypeError: One of them has the wrong type.
        PolicyError: ``policies`` does not know the deployment named in ``metadata``.
    """
    options = (("guard", guard), ("policy", policy), ("policies", policies))
    given = [name for name, value in options if value is not None]
    if len(given) > 1:
        raise ValueError(f"pass at most one of guard, policy and policies; got {' and '.join(given)}")
    if guard is not None:
        if not isinstance(guard, Guard):
            raise TypeError(f"guard must be a guardrail.Guard, got {type(guard).__name__}")
        return guard
    if policies is not None:
        if not isinstance(policies, PolicySet):
            raise TypeError(f"policies must be a guardrail.PolicySet, got {type(policies).__name__}")
        return policies.guard(metadata)
    return shared_guard(policy)  # raises TypeError for anything but a name, a path or a Policy
