"""The scoring service as a Ray Serve application: an HTTP ingress and a scorer deployment that scales.

Two deployments:

- ``guardrail-scorer``: the model. Each replica loads it once and scores with ``@serve.batch``,
  so the requests of every ingress replica share its forward passes; replicas scale with
  ``num_replicas: auto`` on ``target_ongoing_requests``, on GPUs (``ray_actor_options:
  {num_gpus: 1}``) or CPUs.
- ``guardrail-api``: the same HTTP API as ``guardrail serve`` (``/v1/score``, ``/v1/check``, the
  Generic Guardrail route, probes), its guards scoring through a handle to the scorer.

Build it with :func:`build_app` (``serve run guardrail.serving:build_app``, a ``serve deploy``
config's ``import_path``, or ``guardrail serve --ray``); its arguments are :class:`RaySettings`.
A scorer replica that dies mid-request fails only the requests it held: the handle's call raises,
``/v1/score`` answers 503 (which a :class:`RemoteScorer` repeats on another replica) and
``/v1/check`` decides by the policy's ``on_error``; Ray Serve starts a new replica meanwhile.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Sequence
from typing import Any

from pydantic import ConfigDict, Field

from guardrail._serving.app import create_app
from guardrail._serving.service import ScoringService, ServeSettings
from guardrail._types import Item, Runtime
from guardrail._values import ValueVector

SCORER = "guardrail-scorer"
INGRESS = "guardrail-api"


class RaySettings(ServeSettings):
    """``guardrail serve --ray`` settings: the service's, plus how the deployments scale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scorer_replicas: int | str = Field(
        default=1, description="Scorer replicas: a number, or 'auto' to scale on target_ongoing_requests."
    )
    min_replicas: int = Field(default=1, ge=0, description="Fewest scorer replicas under 'auto'.")
    max_replicas: int = Field(default=4, ge=1, description="Most scorer replicas under 'auto'.")
    target_ongoing_requests: float = Field(default=8, gt=0, description="Requests per scorer replica 'auto' aims at.")
    scorer_gpus: float = Field(default=0, ge=0, description="GPUs per scorer replica (0: CPU replicas).")
    scorer_cpus: float = Field(default=1, gt=0, description="CPUs per scorer replica.")
    ingress_replicas: int = Field(default=1, ge=1, description="HTTP ingress replicas.")


def _deployments() -> tuple[Any, Any]:
    """The two deployment classes, defined when Ray is imported (an optional extra)."""
    from ray import serve

    @serve.deployment(name=SCORER)
    class ScorerDeployment:
        """One model replica; concurrent calls from every ingress share forward passes."""

        def __init__(self, model: str | None, runtime: Runtime, max_batch: int, max_wait_ms: float) -> None:
            from guardrail._scoring.scorer import TransformerScorer

            self.scorer = TransformerScorer(model, runtime=runtime)
            self.score.set_max_batch_size(max_batch)
            self.score.set_batch_wait_timeout_s(max_wait_ms / 1000)
            self.scorer.score([(None, "Ready.")])
            gc.collect()
            gc.freeze()

        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.002)
        async def score(self, requests: list[list[Item]]) -> list[tuple[list[list[float]], str]]:
            """Each request's vectors (as rows) and the model id: the requests of a batch in one pass."""
            flat = [tuple(item) for request in requests for item in request]
            vectors = await asyncio.to_thread(self.scorer.score, flat)
            rows = iter([v.to_list() for v in vectors])
            return [([next(rows) for _ in request], self.scorer.model_id) for request in requests]

    @serve.deployment(name=INGRESS)
    @serve.ingress()
    class Ingress:
        """The HTTP API; its guards score through the scorer deployment's handle."""

        def __init__(self, scorer: Any, settings: dict[str, Any]) -> None:
            # The scorer replicas warm up in their constructors; the handle is first called from this
            # replica's event loop, never from a thread of its own (its router belongs to the loop).
            self.service = ScoringService(ServeSettings(**settings), build_scorer=lambda: HandleScorer(scorer),
                                          warm=False)  # fmt: skip
            self.service.start(wait=True)

        def __serve_build_asgi_app__(self) -> Any:
            return create_app(self.service, start=False)

        def check_health(self) -> None:
            if not self.service.ready:
                raise RuntimeError(self.service.error or "not ready")

    return ScorerDeployment, Ingress


class HandleScorer:
    """A :class:`Scorer` that scores through a Ray Serve handle to the scorer deployment."""

    device = "ray"

    model_id = "value-guardrail (ray)"
    """Until the first answer: then the scorer deployment's model id."""

    def __init__(self, handle: Any) -> None:
        self._handle = handle

    def score(self, items: Sequence[Item]) -> list[ValueVector]:
        """Score a batch in a scorer replica (blocking: not from the replica's event loop)."""
        rows, self.model_id = self._handle.score.remote([list(i) for i in items]).result()
        return _vectors(rows)

    async def ascore(self, items: Sequence[Item]) -> list[ValueVector]:
        """Score a batch in a scorer replica."""
        rows, self.model_id = await self._handle.score.remote([list(i) for i in items])
        return _vectors(rows)


def _vectors(rows: list[list[float]]) -> list[ValueVector]:
    return [ValueVector.from_sequence(row) for row in rows]


def build_app(args: dict[str, Any] | None = None) -> Any:
    """The Ray Serve application (an application builder: ``serve run guardrail.serving:build_app``).

    ``args`` are :class:`RaySettings` fields (a config file's ``args:``).
    """
    settings = RaySettings(**(args or {}))
    scorer_cls, ingress_cls = _deployments()
    replicas = settings.scorer_replicas
    scaling: dict[str, Any]
    if replicas == "auto":
        scaling = {"num_replicas": "auto", "autoscaling_config": {
            "min_replicas": settings.min_replicas, "max_replicas": settings.max_replicas,
            "target_ongoing_requests": settings.target_ongoing_requests,
        }}  # fmt: skip
    elif isinstance(replicas, int) or (isinstance(replicas, str) and replicas.isdigit()):
        scaling = {"num_replicas": int(replicas)}
    else:
        raise ValueError(f"scorer_replicas: expected a number or 'auto', got {replicas!r}")
    scorer = scorer_cls.options(
        **scaling,
        max_ongoing_requests=max(settings.max_batch * 4, 64),  # enough waiting to fill the next batch
        ray_actor_options={"num_cpus": settings.scorer_cpus, "num_gpus": settings.scorer_gpus},
    ).bind(settings.model, settings.runtime, settings.max_batch, settings.max_wait_ms)
    service = ServeSettings(**settings.model_dump(include=set(ServeSettings.model_fields))).model_dump()
    # The ingress only awaits (parsing, the scorer's handle): it takes many requests at once, not
    # Ray Serve's default of five, which would queue callers in the proxy while the scorers idle.
    return ingress_cls.options(
        num_replicas=settings.ingress_replicas, max_ongoing_requests=1024, ray_actor_options={"num_cpus": 0}
    ).bind(scorer, service)


def run(settings: RaySettings, *, address: str | None = None, blocking: bool = True) -> None:
    """Start the application on a Ray cluster (``address``; default: a local one) and serve HTTP."""
    import ray
    from ray import serve

    ray.init(address=address, ignore_reinit_error=True)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    serve.run(build_app(settings.model_dump()), name="guardrail", route_prefix="/", blocking=blocking)
