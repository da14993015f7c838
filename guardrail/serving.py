"""The scoring service: one scoring tier that many apps and LiteLLM proxies share.

Run it with ``guardrail serve`` (uvicorn) or ``guardrail serve --ray`` (Ray Serve), or build it here:

- :func:`create_app` / :class:`ScoringService` / :class:`ServeSettings`: the ASGI app, to mount or
  serve with any ASGI server;
- :func:`build_app` / :class:`RaySettings`: the Ray Serve application (``serve run
  guardrail.serving:build_app``, or a ``serve deploy`` config's ``import_path``);
- apps reach it with :class:`guardrail.RemoteScorer` or a policy's ``scorer: {remote: URL}``.

See docs/serving.md.
"""

from __future__ import annotations

from guardrail._serving.app import GENERIC_GUARDRAIL_ROUTE, create_app, run
from guardrail._serving.rayserve import RaySettings, build_app
from guardrail._serving.service import ScoringService, ServeSettings

__all__ = [
    "GENERIC_GUARDRAIL_ROUTE",
    "RaySettings",
    "ScoringService",
    "ServeSettings",
    "build_app",
    "create_app",
    "run",
]
