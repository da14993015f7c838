"""What a scoring service answers with: its settings, one shared scorer, a guard per policy.

:class:`ScoringService` builds its scorer in a background thread, so the process answers
``/healthz`` at once and ``/readyz`` only when the model is loaded and has scored once. All
guards share the one scorer, and the scorer a service builds is a :class:`MicroBatcher`:
concurrent requests, from any number of callers, share forward passes.
"""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider
from pydantic import BaseModel, ConfigDict, Field

from guardrail._exceptions import PolicyError
from guardrail._guard.guard import Guard
from guardrail._scoring.batching import MicroBatcher
from guardrail._scoring.remote import TOKEN_ENV
from guardrail._types import Runtime, Scorer

logger = logging.getLogger(__name__)


class ServeSettings(BaseModel):
    """How ``guardrail serve`` runs: where it listens, what it scores with, what it accepts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field(default="127.0.0.1", description="Address to listen on (0.0.0.0: every interface).")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to listen on (0: any free port).")
    policies: list[str] = Field(
        default=["default"], min_length=1,
        description="Policies /v1/check and the guardrail route may name (shipped names or paths); the first is "
        "the default. A request can only name one of these, never a path of its own.",
    )  # fmt: skip
    model: str | None = Field(default=None, description="Model directory (default: the shipped model).")
    runtime: Runtime = Field(default="auto", description="Where the forward pass runs (see the scorer settings).")
    max_batch: int = Field(default=64, ge=1, description="Most items one forward pass takes across requests.")
    max_wait_ms: float = Field(default=2.0, ge=0, description="Longest a request waits for others to join it.")
    max_items: int = Field(default=1024, ge=1, description="Most items one request may carry (413 beyond).")
    max_body_bytes: int = Field(default=4 << 20, ge=1024, description="Largest request body (413 beyond).")
    timeout_ms: float = Field(default=10_000, gt=0, description="Longest /v1/score waits for its vectors (504).")
    token_env: str = Field(
        default=TOKEN_ENV, description="Environment variable holding the bearer token requests must carry "
        "(unset: no authentication). Health and readiness probes never need it.",
    )  # fmt: skip


class ScoringService:
    """The scorer and the guards of one service process.

    Args:
        settings: The service's settings (policies, batching, runtime...).
        build_scorer: Makes the scorer (default: the shipped model, micro-batched); runs in a
            background thread started by :meth:`start`.
        warm: Score once before saying ready (a scorer that warms itself elsewhere: False).
        tracer_provider / meter_provider: For the guards' ``guardrail.*`` spans and metrics.
    """

    def __init__(
        self,
        settings: ServeSettings,
        *,
        build_scorer: Callable[[], Scorer] | None = None,
        warm: bool = True,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        self.settings = settings
        self._warm = warm
        self._build = build_scorer or self._transformer
        self._providers: dict[str, Any] = {"tracer_provider": tracer_provider, "meter_provider": meter_provider}
        self._loaded = threading.Event()
        self._thread: threading.Thread | None = None
        self._scorer: Scorer | None = None
        self._guards: dict[str, Guard] = {}
        self.default_policy = ""
        self.error: str | None = None
        """Why the service could not start (a model or policy that failed to load), else None."""

    def start(self, *, wait: bool = False) -> None:
        """Load the scorer and the policies in the background (``wait``: until done)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._load, name="guardrail-serve-load", daemon=True)
            self._thread.start()
        if wait:
            self._loaded.wait()

    @property
    def ready(self) -> bool:
        """Whether the model is loaded and every policy built: the service can answer."""
        return self._loaded.is_set() and self.error is None

    @property
    def scorer(self) -> Scorer:
        """The shared scorer (only once ready)."""
        assert self._scorer is not None, "the service is not ready"
        return self._scorer

    @property
    def policy_names(self) -> list[str]:
        """The names a request may give as its policy."""
        return sorted(self._guards)

    def guard(self, name: str | None) -> Guard:
        """The guard of a policy named by a request (``None``: the default policy).

        Raises:
            PolicyError: The name is not one of the service's policies.
        """
        key = name or self.default_policy
        if key not in self._guards:
            raise PolicyError(f"unknown policy {name!r}; this service has: {', '.join(self.policy_names)}")
        return self._guards[key]

    def close(self) -> None:
        """Stop the batcher's workers."""
        if isinstance(self._scorer, MicroBatcher):
            self._scorer.close()

    def _transformer(self) -> Scorer:
        from guardrail._scoring.scorer import TransformerScorer

        scorer = TransformerScorer(self.settings.model, runtime=self.settings.runtime)
        return MicroBatcher(
            scorer, max_batch=self.settings.max_batch, max_wait_ms=self.settings.max_wait_ms,
            meter_provider=self._providers["meter_provider"], background=scorer.background(),
        )  # fmt: skip

    def _load(self) -> None:
        try:
            scorer = self._build()
            guards: dict[str, Guard] = {}
            for source in self.settings.policies:
                guard = Guard(source, scorer, **self._providers)
                guards.setdefault(source, guard)
                guards.setdefault(guard.policy.name, guard)
            if self._warm:
                scorer.score([(None, "Ready.")])  # the first pass allocates; a probe that passes can be served
            self._scorer, self._guards = scorer, guards
            self.default_policy = self.settings.policies[0]
            # The model's millions of objects never become garbage: keep the collector from walking them.
            gc.collect()
            gc.freeze()
        except Exception as exc:  # reported by /readyz and the log; the process stays up to say so
            self.error = f"{type(exc).__name__}: {exc}"
            logger.error("scoring service failed to start: %s", self.error)
        finally:
            self._loaded.set()


def vectors_json(vectors: Sequence[Any]) -> list[list[float]]:
    """Vectors as JSON rows of ten scores, in the fixed value order."""
    return [vector.to_list() for vector in vectors]
