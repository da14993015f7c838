"""``PolicySet``: one policy per deployment or tenant, picked per call from request metadata.

A policy-set file maps names to policies (shipped names or paths, relative to the file)::

    key: deployment            # the metadata field that names the deployment
    default: default           # used when a call names none
    policies:
      support-bot: customer-support
      internal: ./internal.yaml
      billing:                 # with a shadow candidate, decided beside it and recorded, never applied
        policy: customer-support
        shadow: ./support-v2.yaml

Every policy loads when the set is built, so a typo fails at start-up, not on the first request.
All guards of a set share one scorer (one model in memory). A set read from a file watches it, as
each guard watches its policy: a valid change swaps in the new mapping between checks (guards of
unchanged entries are kept), a broken one keeps the running set and is logged and counted.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from guardrail._exceptions import PolicyError
from guardrail._guard.guard import Guard, default_policy
from guardrail._guard.reload import DEFAULT_INTERVAL_S, FileWatch, fingerprint
from guardrail._policy.loader import dotted, read_yaml
from guardrail._types import Scorer

logger = logging.getLogger("guardrail")


class Entry(BaseModel):
    """A deployment's policy with a shadow candidate beside it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: str = Field(min_length=1, description="The enforced policy: a shipped name or a path.")
    shadow: str | None = Field(default=None, description="A candidate decided beside it, recorded, never applied.")


class PolicySetConfig(BaseModel):
    """The schema of a policy-set file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(default="deployment", min_length=1, description="Metadata field naming the deployment.")
    default: str | None = Field(
        default=None, description="Policy for calls that name no deployment (default: $GUARDRAIL_POLICY or default)."
    )
    policies: dict[str, str | Entry] = Field(
        default_factory=dict, description="Deployment name -> policy name or path, or {policy, shadow}."
    )


class _Guards(NamedTuple):  # swapped whole on reload: a call sees the old set or the new one
    default: Guard
    by_name: dict[str, Guard]
    sources: dict[str, tuple[str, str | None]]


class PolicySet:
    """Guards per deployment, sharing one scorer.

    Example:
        >>> policies = PolicySet({"support-bot": "customer-support"})  # doctest: +SKIP
        >>> policies.guard({"deployment": "support-bot"}).policy.name  # doctest: +SKIP
        'customer-support'
    """

    def __init__(
        self,
        policies: Mapping[str, str | os.PathLike[str] | Entry | Mapping[str, Any]],
        *,
        default: str | os.PathLike[str] | None = None,
        key: str = "deployment",
        scorer: Scorer | None = None,
        base: Path | None = None,
        **guard_options: Any,
    ) -> None:
        self.key = key
        self._base = base
        self._options = guard_options
        self._file: Path | None = None
        self._fingerprint: tuple[Any, ...] = ()
        self.reload_failures = 0
        """Changes to the set's file that were not valid and were not swapped in."""
        self._lock = threading.Lock()
        self._watch: FileWatch | None = None
        self._guards = self._build(policies, default, scorer, None)

    def _resolve(self, source: str | os.PathLike[str]) -> Any:
        text = os.fspath(source)
        if self._base is not None and (text.startswith(".") or "/" in text) and not Path(text).is_absolute():
            return self._base / text
        return source

    def _build(
        self, policies: Mapping[str, Any], default: str | os.PathLike[str] | None, scorer: Scorer | None,
        old: _Guards | None,
    ) -> _Guards:  # fmt: skip
        """Guards for every entry; an entry whose sources did not change keeps its guard (and its watch)."""
        sources: dict[str, tuple[str, str | None]] = {}
        for name, spec in policies.items():
            entry = Entry.model_validate(spec) if isinstance(spec, (Entry, Mapping)) else None
            sources[name] = (entry.policy, entry.shadow) if entry else (os.fspath(spec), None)
        default_source = (os.fspath(default if default is not None else default_policy()), None)

        def guard(name: str | None, source: tuple[str, str | None], shared: Scorer | None) -> Guard:
            kept = old and (old.default if name is None else old.by_name.get(name))
            kept_source = old and (old.sources.get("") if name is None else old.sources.get(name))
            if kept and kept_source == source:
                return kept
            policy, shadow = source
            shadow_opt = {} if shadow is None else {"shadow": self._resolve(shadow)}
            return Guard(self._resolve(policy), shared, **self._options, **shadow_opt)

        first = guard(None, default_source, scorer)
        by_name = {name: guard(name, src, first.scorer) for name, src in sources.items()}
        return _Guards(first, by_name, {"": default_source, **sources})

    @property
    def default(self) -> Guard:
        """The guard of calls that name no deployment."""
        return self._guards.default

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, scorer: Scorer | None = None, **guard_options: Any) -> PolicySet:
        """Read a policy-set YAML file (see the module docs).

        Raises:
            PolicyNotFoundError: The file, or a policy it names, does not exist.
            PolicyError: The file is not a valid policy set, or a policy it names is not valid.
        """
        file = Path(path)
        # The policy loader's safe reader: size, nesting and alias expansion are bounded alike.
        taken = fingerprint([file])
        config = _read_set(file)
        policies = cls(config.policies, default=config.default, key=config.key, scorer=scorer,
                       base=file.parent, **guard_options)  # fmt: skip
        policies._file, policies._fingerprint = file, taken
        if guard_options.get("reload", True) is not False:
            interval = guard_options.get("reload_interval_s", DEFAULT_INTERVAL_S)
            policies._watch = FileWatch(policies, PolicySet._poll, interval)
        return policies

    def reload(self) -> bool:
        """Read the set's file again now; swap in the new mapping when it is valid (see the module docs).

        Returns whether a new mapping was swapped in. The ``key`` of a set is fixed at start.
        """
        if self._file is None:
            raise ValueError("reload() needs a policy set read from a file (PolicySet.load)")
        with self._lock:
            old = self._guards
            try:
                self._fingerprint = fingerprint([self._file])
                config = _read_set(self._file)
                new = self._build(config.policies, config.default, old.default.scorer, old)
            except Exception as exc:  # a broken change must never stop the set: keep the running one
                self.reload_failures += 1
                logger.error("policy set %s: the change is not valid; keeping the running set: %s", self._file, exc)
                return False
            if new.sources == old.sources:
                return False
            self._guards = new
            logger.info("policy set %s: reloaded (%d deployments)", self._file, len(new.by_name))
            return True

    def _poll(self) -> None:
        assert self._file is not None
        if fingerprint([self._file]) != self._fingerprint:
            self.reload()

    @property
    def names(self) -> list[str]:
        """The deployment names this set knows, sorted."""
        return sorted(self._guards.by_name)

    def guard(self, metadata: Mapping[str, Any] | None = None) -> Guard:
        """The guard for a call: by ``metadata[key]``, the default guard when the call names none.

        Raises:
            PolicyError: The metadata names a deployment this set does not know.
        """
        guards = self._guards
        name = (metadata or {}).get(self.key)
        if name is None:
            return guards.default
        found = guards.by_name.get(name)
        if found is None:
            known = ", ".join(sorted(guards.by_name)) or "(none)"
            raise PolicyError(f"unknown {self.key} {name!r} in request metadata; known: {known}")
        return found


def _read_set(file: Path) -> PolicySetConfig:
    # The policy loader's safe reader: size, nesting and alias expansion are bounded alike.
    raw = read_yaml(file, str(file), what="policy set").data or {}
    try:
        return PolicySetConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = dotted(err["loc"]) or "(top level)"
        raise PolicyError(f"{file}: {where}: {err['msg']}") from exc
