"""``PolicySet``: one policy per deployment or tenant, picked per call from request metadata.

A policy-set file maps names to policies (shipped names or paths, relative to the file)::

    key: deployment            # the metadata field that names the deployment
    default: default           # used when a call names none
    policies:
      support-bot: customer-support
      internal: ./internal.yaml

Every policy loads when the set is built, so a typo fails at start-up, not on the first request.
All guards of a set share one scorer (one model in memory).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guardrail._exceptions import PolicyError
from guardrail._guard.guard import Guard, default_policy
from guardrail._policy.loader import read_yaml
from guardrail._types import Scorer


class PolicySetConfig(BaseModel):
    """The schema of a policy-set file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(default="deployment", min_length=1, description="Metadata field naming the deployment.")
    default: str | None = Field(
        default=None, description="Policy for calls that name no deployment (default: $GUARDRAIL_POLICY or default)."
    )
    policies: dict[str, str] = Field(default_factory=dict, description="Deployment name -> policy name or path.")


class PolicySet:
    """Guards per deployment, sharing one scorer.

    Example:
        >>> policies = PolicySet({"support-bot": "customer-support"})  # doctest: +SKIP
        >>> policies.guard({"deployment": "support-bot"}).policy.name  # doctest: +SKIP
        'customer-support'
    """

    def __init__(
        self,
        policies: Mapping[str, str | os.PathLike[str]],
        *,
        default: str | os.PathLike[str] | None = None,
        key: str = "deployment",
        scorer: Scorer | None = None,
        base: Path | None = None,
        **guard_options: Any,
    ) -> None:
        self.key = key

        def resolve(source: str | os.PathLike[str]) -> Any:
            text = os.fspath(source)
            if base is not None and (text.startswith(".") or "/" in text) and not Path(text).is_absolute():
                return base / text
            return source

        self.default = Guard(resolve(default if default is not None else default_policy()), scorer, **guard_options)
        shared = self.default.scorer
        self._guards = {name: Guard(resolve(src), shared, **guard_options) for name, src in policies.items()}

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, scorer: Scorer | None = None, **guard_options: Any) -> PolicySet:
        """Read a policy-set YAML file (see the module docs).

        Raises:
            PolicyNotFoundError: The file, or a policy it names, does not exist.
            PolicyError: The file is not a valid policy set, or a policy it names is not valid.
        """
        file = Path(path)
        # The policy loader's safe reader: size, nesting and alias expansion are bounded alike.
        raw = read_yaml(file, str(file), what="policy set").data or {}
        try:
            config = PolicySetConfig.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            raise PolicyError(f"{file}: {where}: {err['msg']}") from exc
        return cls(config.policies, default=config.default, key=config.key, scorer=scorer,
                   base=file.parent, **guard_options)  # fmt: skip

    @property
    def names(self) -> list[str]:
        """The deployment names this set knows, sorted."""
        return sorted(self._guards)

    def guard(self, metadata: Mapping[str, Any] | None = None) -> Guard:
        """The guard for a call: by ``metadata[key]``, the default guard when the call names none.

        Raises:
            PolicyError: The metadata names a deployment this set does not know.
        """
        name = (metadata or {}).get(self.key)
        if name is None:
            return self.default
        if name not in self._guards:
            known = ", ".join(self.names) or "(none)"
            raise PolicyError(f"unknown {self.key} {name!r} in request metadata; known: {known}")
        return self._guards[name]
