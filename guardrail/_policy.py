"""Policy models: the declarative value policy, validated by pydantic. No file I/O here.

A policy maps regions of the value space to actions::

    name: customer-support
    version: "1.2"
    extends: default
    thresholds:
      benevolence: {min: -0.3, action: block, severity: high}
    regions:
      hateful:
        kind: forbidden
        box: {benevolence: {max: -0.5}, universalism: {max: -0.3}}
        action: block
        severity: critical
    actions:
      block: {type: block, message: "I can't help with that."}

Files are read by :func:`guardrail.load_policy`, which adds file:line to every error.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from enum import IntEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guardrail._types import Runtime
from guardrail._values import VALUES

ActionType = Literal["allow", "log", "block", "rewrite"]
RewriteStrategy = Literal["reask", "redact"]
Severity = Literal["low", "medium", "high", "critical"]
Metric = Literal["l1", "l2", "cosine"]

ACTION_STRENGTH: Mapping[str, int] = {"allow": 0, "log": 1, "rewrite": 2, "block": 3}
"""How strongly each action type alters a response; the strongest violated action wins."""


class SeverityRank(IntEnum):
    """Order of severities, used to break ties between violations with the same action type."""

    low = 0
    medium = 1
    high = 2
    critical = 3


DEFAULT_BLOCK_MESSAGE = "I can't help with that request."

Score = Annotated[float, Field(ge=-1.0, le=1.0)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_dimensions(keys: Mapping[str, Any] | list[str]) -> None:
    for key in keys:
        if key not in VALUES:
            raise ValueError(f"unknown value dimension {key!r}; expected one of: {', '.join(VALUES)}")


class Range(_Model):
    """A closed interval of scores; a missing bound is open (the edge of [-1, 1])."""

    min: Score | None = Field(default=None, description="Lowest allowed score (inclusive).")
    max: Score | None = Field(default=None, description="Highest allowed score (inclusive).")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self

    @property
    def low(self) -> float:
        """The lower bound, -1 when open."""
        return -1.0 if self.min is None else self.min

    @property
    def high(self) -> float:
        """The upper bound, +1 when open."""
        return 1.0 if self.max is None else self.max


class Threshold(Range):
    """A per-dimension floor and/or ceiling; crossing it triggers ``action``."""

    action: str = Field(default="block", description="Name of the action (see `actions`).")
    severity: Severity = Field(default="high", description="Breaks ties between violations.")

    @model_validator(mode="after")
    def _has_bound(self) -> Threshold:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min, max or both")
        return self


class Distance(_Model):
    """Distance from a reference profile, over all or some dimensions."""

    reference: dict[str, Score] = Field(description="Reference scores; missing dimensions are 0.")
    metric: Metric = Field(default="l2", description="l1, l2 or cosine (1 - cosine similarity).")
    max: float = Field(gt=0, description="Radius: the region holds vectors at distance <= max.")
    dimensions: list[str] | None = Field(
        default=None, description="Dimensions the distance is computed over (default: all ten)."
    )

    @field_validator("reference")
    @classmethod
    def _reference_keys(cls, value: dict[str, float]) -> dict[str, float]:
        _check_dimensions(value)
        return value

    @field_validator("dimensions")
    @classmethod
    def _dimension_keys(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("dimensions must name at least one value")
            _check_dimensions(value)
        return value


class Region(_Model):
    """A named region of the value space: a box or a ball, allowed or forbidden.

    A response inside any forbidden region violates. When a policy names allowed regions,
    a response outside all of them violates too (with the nearest allowed region's action).
    """

    kind: Literal["allowed", "forbidden"] = Field(description="allowed or forbidden.")
    description: str = ""
    box: dict[str, Range] | None = Field(
        default=None, description="Per-dimension ranges that must all hold to be inside."
    )
    distance: Distance | None = Field(default=None, description="A ball around a reference profile.")
    action: str = Field(default="block", description="Name of the action (see `actions`).")
    severity: Severity = "high"

    @field_validator("box")
    @classmethod
    def _box_keys(cls, value: dict[str, Range] | None) -> dict[str, Range] | None:
        if value is not None:
            if not value:
                raise ValueError("box must name at least one dimension")
            _check_dimensions(value)
        return value

    @model_validator(mode="after")
    def _one_shape(self) -> Region:
        if (self.box is None) == (self.distance is None):
            raise ValueError("a region needs exactly one of box or distance")
        return self


class Action(_Model):
    """What a violation does.

    ``message`` is used by block. A rewrite names a ``strategy``:

    - ``reask``: ask the same model again, telling it which values its answer opposed and by how
      much; accept the first revision that passes, at most ``max_attempts`` tries.
    - ``redact``: drop the sentences that violate and keep the rest, if at least ``min_keep`` of
      the text is left and what is left passes.

    When a rewrite fails, the ``fallback`` action applies (default ``block``).

    Example:
        >>> Action(type="rewrite", strategy="reask", max_attempts=2, fallback="block").strategy
        'reask'
    """

    type: ActionType = Field(description="allow, log, block or rewrite.")
    message: str | None = Field(default=None, description="Text returned instead of the response (block).")
    strategy: RewriteStrategy | None = Field(default=None, description="Rewrite strategy: reask or redact.")
    max_attempts: int = Field(default=2, ge=1, le=10, description="reask: revisions to try before falling back.")
    min_keep: float = Field(
        default=0.5, ge=0, le=1, description="redact: least share of the answer's characters that must remain."
    )
    fallback: str = Field(default="block", description="rewrite: action applied when the rewrite fails.")
    params: dict[str, Any] = Field(default_factory=dict, description="Extra parameters for the action.")

    @model_validator(mode="after")
    def _fields_fit_type(self) -> Action:
        if self.type == "rewrite" and not self.strategy:
            raise ValueError("a rewrite action needs a strategy (reask or redact)")
        if self.type != "rewrite" and self.strategy is not None:
            raise ValueError(f"strategy only applies to rewrite, not {self.type}")
        if self.type != "block" and self.type != "rewrite" and self.message is not None:
            raise ValueError(f"message only applies to block or rewrite, not {self.type}")
        return self


class ScorerSettings(_Model):
    """How checks reach the scorer, and where the scorer a Guard builds itself runs.

    Micro-batching gathers concurrent checks (threads and tasks) into one forward pass: a worker
    takes the first request, adds what arrives within ``max_wait_ms`` up to ``max_batch`` items,
    scores them together and returns each caller its own verdicts.
    """

    batching: bool | None = Field(
        default=None,
        description="Micro-batch concurrent checks. null: on for the scorer a Guard builds itself, off for a "
        "scorer passed in; true/false: always/never.",
    )
    max_batch: int = Field(default=64, ge=1, description="Most items scored in one joint call.")
    max_wait_ms: float = Field(
        default=0.0, ge=0, description="Longest wait for company; 0 takes only what is queued (no added latency)."
    )
    runtime: Runtime = Field(
        default="auto",
        description="Where the scorer a Guard builds itself runs its forward pass: auto (CUDA: torch in bfloat16; "
        "CPU: onnx when the onnx extra is installed, else torch), torch, torch-bf16, torch-int8, onnx, onnx-int8. "
        "A scorer passed in keeps its own.",
    )


class Streaming(_Model):
    """How a streamed answer is guarded (NeMo Guardrails' meanings).

    Text is held back and scored ``chunk_size`` characters at a time, each window carrying the
    last ``context_size`` characters already scored. With ``stream_first: false`` (the default)
    nothing reaches the caller before it has passed, so a blocked answer delivers no text; with
    ``true`` chunks pass through first and the stream is cut with the policy's message as soon as a
    window violates.
    """

    chunk_size: int = Field(default=200, ge=1, description="Characters scored at a time.")
    context_size: int = Field(default=50, ge=0, description="Characters of overlap carried into the next window.")
    stream_first: bool = Field(default=False, description="Pass chunks through before they are scored.")


BUILTIN_ACTIONS: Mapping[str, Action] = {
    "allow": Action(type="allow"),
    "log": Action(type="log"),
    "block": Action(type="block", message=DEFAULT_BLOCK_MESSAGE),
}
"""Actions every policy can name without defining them; a policy may redefine them."""


class Policy(_Model):
    """A declarative value policy: thresholds and regions in value space, mapped to actions.

    Example:
        >>> p = Policy(name="demo", thresholds={"benevolence": {"min": -0.3}})
        >>> p.thresholds["benevolence"].min
        -0.3
    """

    name: str = Field(min_length=1, description="Policy name, recorded on every verdict.")
    version: str = Field(default="0", description="Policy version, recorded on every verdict.")
    description: str = ""
    extends: str | None = Field(default=None, description="A shipped policy name or a path; this file overrides it.")
    mode: Literal["enforce", "shadow"] = Field(
        default="enforce", description="shadow decides and records but never alters the response."
    )
    thresholds: dict[str, Threshold] = Field(default_factory=dict)
    regions: dict[str, Region] = Field(default_factory=dict)
    actions: dict[str, Action] = Field(default_factory=dict)
    on_error: Literal["block", "allow"] = Field(
        default="block", description="What to do when scoring fails or times out (fail closed)."
    )
    error_action: str | None = Field(
        default=None, description="Action used when on_error is block (default: the block action)."
    )
    timeout_ms: float | None = Field(default=None, gt=0, description="Scoring time limit.")
    streaming: Streaming = Field(default_factory=Streaming, description="How streamed answers are guarded.")
    scorer: ScorerSettings = Field(default_factory=ScorerSettings, description="How checks reach the scorer.")
    capture_content: bool | None = Field(
        default=None,
        description="Record prompt, answer and delivered text on spans (capped at 4096 characters). null: follow "
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT; a Guard's capture_content argument overrides both.",
    )

    @field_validator("thresholds")
    @classmethod
    def _threshold_keys(cls, value: dict[str, Threshold]) -> dict[str, Threshold]:
        _check_dimensions(value)
        return value

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # YAML reads `version: 1.0` as a float; accept it as the text the author wrote.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _actions_defined(self) -> Policy:
        known = {**BUILTIN_ACTIONS, **self.actions}
        named = [(f"thresholds.{k}", t.action) for k, t in self.thresholds.items()]
        named += [(f"regions.{k}", r.action) for k, r in self.regions.items()]
        if self.error_action is not None:
            named.append(("error_action", self.error_action))
        named += [(f"actions.{k}.fallback", a.fallback) for k, a in self.actions.items() if a.type == "rewrite"]
        for where, action in named:
            if action not in known:
                raise ValueError(f"{where}: unknown action {action!r}; defined: {', '.join(sorted(known))}")
        for name, spec in self.actions.items():
            if spec.type == "rewrite" and known[spec.fallback].type == "rewrite":
                raise ValueError(f"actions.{name}.fallback: {spec.fallback!r} is a rewrite; a fallback must not be")
        return self

    def action(self, name: str) -> Action:
        """Return the action called ``name`` (policy-defined first, then built-in)."""
        return self.actions.get(name) or BUILTIN_ACTIONS[name]

    def content_hash(self) -> str:
        """SHA-256 of the resolved policy content (stable across key order and formatting)."""
        text = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two raw policy mappings: ``child`` overrides ``base``.

    ``thresholds``, ``regions`` and ``actions`` merge entry by entry, so a child adds or replaces
    one entry and keeps the rest; an entry set to ``null`` removes the inherited one. A threshold
    merges field by field (a child can move one bound), and so do ``streaming`` and ``scorer``. Any
    other key is replaced whole.
    ``extends`` is not inherited.
    """
    out: dict[str, Any] = {k: v for k, v in base.items() if k != "extends"}
    for key, value in child.items():
        inherited = out.get(key)
        if key in ("streaming", "scorer") and isinstance(value, Mapping) and isinstance(inherited, Mapping):
            out[key] = {**inherited, **value}
        elif key in _MERGED_SECTIONS and isinstance(value, Mapping) and isinstance(inherited, Mapping):
            section = dict(inherited)
            for entry, spec in value.items():
                if spec is None:
                    section.pop(entry, None)
                elif key == "thresholds" and isinstance(spec, Mapping) and isinstance(section.get(entry), Mapping):
                    section[entry] = {**section[entry], **spec}
                else:
                    section[entry] = spec
            out[key] = section
        else:
            out[key] = value
    return out


_MERGED_SECTIONS = frozenset({"thresholds", "regions", "actions"})
