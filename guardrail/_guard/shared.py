"""Process-wide guards: one per policy, over one scorer per scorer setup, each built on first use.

Integrations build a wrapper per model, per chain, sometimes per request; a guard of their own each
time would load the model each time (a few hundred milliseconds and as much memory again). The
shared guards make a wrapper cheap: the first one for a policy builds its guard, the rest reuse it.
"""

from __future__ import annotations

import os
import threading

from guardrail._guard.guard import Guard, PolicySource, default_policy, own_scorer
from guardrail._policy.loader import load_policy
from guardrail._policy.schema import Policy, ScorerSettings
from guardrail._types import Scorer

# A scorer is shared by every policy that asks for the same one: its scorer settings (runtime, so the
# device and precision; remote service; batching) and, for a remote one, the timeout it inherits.
_ScorerKey = tuple[ScorerSettings, float | None]


class SharedGuards:
    """Guards shared by everything in one process that asks for the same policy (thread-safe).

    A policy named or read from a path gets one guard, built on first use, kept for the process's
    life (a policy file of the user's is watched and reloaded as ``Guard`` does). A :class:`Policy`
    object gets a new guard each time, cheap, over the shared scorer. Guards whose policies set up
    their scorer alike share one scorer: the model is in memory once per runtime.

    Args:
        scorer: One scorer for every guard of this store instead of the ones the policies set up
            (tests, or an application that brings its own).
    """

    def __init__(self, scorer: Scorer | None = None) -> None:
        self._lock = threading.RLock()  # a guard's build takes it, and its scorer's build inside again
        self._guards: dict[str, Guard] = {}
        self._scorers: dict[_ScorerKey, Scorer] = {}
        self._fixed = scorer

    def guard(self, policy: PolicySource | None = None) -> Guard:
        """The shared guard for ``policy`` (default: ``$GUARDRAIL_POLICY``, else ``default``).

        Raises:
            PolicyError: The policy cannot be found or is not valid (nothing is kept).
            TypeError: ``policy`` is not a name, a path or a :class:`Policy`.
        """
        source = default_policy() if policy is None else policy
        if isinstance(source, Policy):
            return Guard(source, scorer=self._scorer(source))
        if not isinstance(source, (str, os.PathLike)):
            raise TypeError(f"policy must be a policy name, a path or a Policy, got {type(source).__name__}")
        key = os.fspath(source)
        found = self._guards.get(key)
        if found is not None:
            return found
        with self._lock:  # one build per policy, however many threads ask at once
            found = self._guards.get(key)
            if found is None:
                found = self._guards[key] = Guard(source, scorer=self._scorer(load_policy(source)))
        return found

    def is_built(self, policy: PolicySource | None = None) -> bool:
        """Whether :meth:`guard` answers for ``policy`` without loading a model (async callers build in a thread)."""
        source = default_policy() if policy is None else policy
        if isinstance(source, Policy):
            return self._fixed is not None or _scorer_key(source) in self._scorers
        return isinstance(source, (str, os.PathLike)) and os.fspath(source) in self._guards

    def _scorer(self, policy: Policy) -> Scorer:
        if self._fixed is not None:
            return self._fixed
        key = _scorer_key(policy)
        found = self._scorers.get(key)
        if found is not None:
            return found
        with self._lock:
            found = self._scorers.get(key)
            if found is None:
                found = self._scorers[key] = own_scorer(policy)
        return found


def _scorer_key(policy: Policy) -> _ScorerKey:
    settings = policy.scorer
    return settings, policy.timeout_ms if settings.remote is not None else None


_SHARED = SharedGuards()  # the one process-wide store: what makes a guard "shared" is that there is one


def shared_guard(policy: PolicySource | None = None) -> Guard:
    """The process-wide guard for ``policy``: built on first use, then the same object for every caller.

    What the LiteLLM and LangChain integrations use when they are given no ``guard=``. A policy name
    or path maps to one guard for the process's life; a :class:`Policy` object gets a new guard over
    the shared scorer. Guards share one scorer per scorer setup (runtime, remote service), so the
    model loads once per process and device. Thread-safe.

    Args:
        policy: A shipped policy name, a YAML path or a :class:`Policy`; default:
            ``$GUARDRAIL_POLICY``, else ``default`` (read at each call).

    Raises:
        PolicyError: The policy cannot be found or is not valid.

    Example:
        >>> shared_guard("strict") is shared_guard("strict")  # doctest: +SKIP
        True
    """
    return _SHARED.guard(policy)


def shared_guard_built(policy: PolicySource | None = None) -> bool:
    """Whether :func:`shared_guard` returns for ``policy`` without building anything (no model load)."""
    return _SHARED.is_built(policy)
