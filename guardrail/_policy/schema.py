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
from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails

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

DEFAULT_TIMEOUT_MS = 10_000.0
"""A policy's scoring time limit per check when it sets none: every check that waits has a deadline."""
DEFAULT_MAX_CHARS = 64_000
"""Longest answer a policy scores whole when it sets no ``max_chars``: bounds the cost of one check."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_M = TypeVar("_M", bound=_Model)


def _problem(loc: tuple[str | int, ...], value: Any, message: str) -> InitErrorDetails:
    """A cross-field problem as a pydantic error (``Value error, ...`` at ``loc``)."""
    return InitErrorDetails(type="value_error", loc=loc, input=value, ctx={"error": ValueError(message)})


def _validated(
    cls: type[_M], data: Any, handler: ModelWrapValidatorHandler[_M], problems: list[InitErrorDetails]
) -> _M:
    """Run the schema (``handler``) and raise its errors and ``problems`` together, so no error waits for another."""
    try:
        value = handler(data)
    except ValidationError as exc:
        if not problems:
            raise
        again = [InitErrorDetails(type=e["type"], loc=e["loc"], input=e["input"], ctx=e.get("ctx", {}))
                 for e in exc.errors()]  # fmt: skip
        raise ValidationError.from_exception_data(cls.__name__, [*again, *problems]) from None
    if problems:
        raise ValidationError.from_exception_data(cls.__name__, problems)
    return value


def _dimension(key: str) -> str:
    if key not in VALUES:
        raise ValueError(f"unknown value dimension {key!r}; expected one of: {', '.join(VALUES)}")
    return key


# Checked key by key (item by item), so each unknown name is one error beside the entry's own.
Dimension = Annotated[str, AfterValidator(_dimension)]


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

    reference: dict[Dimension, Score] = Field(description="Reference scores; missing dimensions are 0.")
    metric: Metric = Field(default="l2", description="l1, l2 or cosine (1 - cosine similarity).")
    max: float = Field(gt=0, description="Radius: the region holds vectors at distance <= max.")
    dimensions: list[Dimension] | None = Field(
        default=None, description="Dimensions the distance is computed over (default: all ten)."
    )

    @field_validator("dimensions")
    @classmethod
    def _dimension_keys(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("dimensions must name at least one value")
        return value


class Region(_Model):
    """A named region of the value space: a box or a ball, allowed or forbidden.

    A response inside any forbidden region violates. When a policy names allowed regions,
    a response outside all of them violates too (with the nearest allowed region's action).
    """

    kind: Literal["allowed", "forbidden"] = Field(description="allowed or forbidden.")
    description: str = ""
    box: dict[Dimension, Range] | None = Field(
        default=None, description="Per-dimension ranges that must all hold to be inside."
    )
    distance: Distance | None = Field(default=None, description="A ball around a reference profile.")
    action: str = Field(default="block", description="Name of the action (see `actions`).")
    severity: Severity = "high"

    @field_validator("box")
    @classmethod
    def _box_keys(cls, value: dict[str, Range] | None) -> dict[str, Range] | None:
        if value is not None and not value:
            raise ValueError("box must name at least one dimension")
        return value

    @model_validator(mode="wrap")
    @classmethod
    def _one_shape(cls, data: Any, handler: ModelWrapValidatorHandler[Region]) -> Region:
        # On the raw input, so the shape is reported beside errors inside the box or distance.
        problems = []
        if isinstance(data, Mapping) and (data.get("box") is None) == (data.get("distance") is None):
            problems.append(_problem((), data, "a region needs exactly one of box or distance"))
        return _validated(cls, data, handler, problems)


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

    def to_dict(self) -> dict[str, Any]:
        """JSON form with the fields this kind of action uses: a message, a rewrite's strategy and its settings."""
        out: dict[str, Any] = {"type": self.type}
        if self.message is not None:
            out["message"] = self.message
        if self.type == "rewrite":
            out["strategy"] = self.strategy
            if self.strategy == "reask":
                out["max_attempts"] = self.max_attempts
            else:
                out["min_keep"] = self.min_keep
            out["fallback"] = self.fallback
        if self.params:
            out["params"] = dict(self.params)
        return out

    @model_validator(mode="wrap")
    @classmethod
    def _fields_fit_type(cls, data: Any, handler: ModelWrapValidatorHandler[Action]) -> Action:
        # On the raw input, so these are reported beside errors in the action's other fields.
        kind = data.get("type") if isinstance(data, Mapping) else None
        problems = []
        if kind in get_args(ActionType):
            if kind == "rewrite" and not data.get("strategy"):
                problems.append(_problem((), data, "a rewrite action needs a strategy (reask or redact)"))
            if kind != "rewrite" and data.get("strategy") is not None:
                problems.append(_problem((), data, f"strategy only applies to rewrite, not {kind}"))
            if kind not in ("block", "rewrite") and data.get("message") is not None:
                problems.append(_problem((), data, f"message only applies to block or rewrite, not {kind}"))
        return _validated(cls, data, handler, problems)


class RemoteScorerSettings(_Model):
    """A scoring service (``guardrail serve``) that scores for this policy's guards instead of a local model."""

    url: str = Field(pattern=r"^https?://\S+$", description="The service's base URL, e.g. http://scorer:8000.")
    timeout_ms: float | None = Field(
        default=None, gt=0, description="Deadline of one scoring call, retries included; default: the policy's."
    )
    retries: int = Field(default=2, ge=0, le=10, description="Repeats after a connection failure or a 502/503/504.")
    token_env: str = Field(
        default="GUARDRAIL_SERVE_TOKEN", description="Environment variable holding the service's bearer token."
    )


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
    remote: RemoteScorerSettings | None = Field(
        default=None,
        description="Score in a scoring service instead of a local model: its URL, or {url, timeout_ms, retries, "
        "token_env}. When it is down or slow the policy's on_error decides.",
    )

    @field_validator("remote", mode="before")
    @classmethod
    def _url_alone(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value


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


LanguageCode = Annotated[str, Field(pattern=r"^[a-z]{2,3}$", description="An ISO 639 code: en, fr, es, de...")]


class Languages(_Model):
    """Which languages the scorer reads, and what happens to text in any other.

    The shipped encoder reads English. Each piece of an answer long enough to tell is put to a
    language detector; pieces in a ``supported`` language, and pieces it cannot tell, are scored,
    and the rest are judged by ``other``: the name of an action (``block``, the default, fails
    closed, since the guard cannot read them; ``log`` delivers and records them; ``allow``
    delivers them), or ``score`` to score every piece as if it were supported.
    """

    supported: list[LanguageCode] = Field(default=["en"], min_length=1, description="Languages the scorer reads.")
    other: str = Field(
        default="block",
        description="Text in any other language: an action name (block, log, allow or your own), or score.",
    )
    severity: Severity = Field(default="high", description="Breaks ties with value violations.")
    min_letters: int = Field(
        default=30, ge=1, description="Text with fewer letters is scored, never judged by language."
    )
    min_confidence: float = Field(
        default=0.7, gt=0, le=1, description="Detector probability a piece needs to count as another language."
    )
    detect: bool = Field(
        default=True,
        description="Detect each answer's language (recorded as the verdict's language). Only a policy that "
        "scores every language (other: score) may turn it off, saving the detector's time (~60 us per answer "
        "on one CPU core); the verdict's language is then not set.",
    )

    @model_validator(mode="after")
    def _detect_unless_needed(self) -> Languages:
        if not self.detect and self.other != "score":
            raise ValueError(f"detect: false needs other: score (other is {self.other!r}, which needs the detector)")
        return self


class DecisionLogSettings(_Model):
    """Append one JSON line per decision to a file (OPA's decision log), rotated by size.

    Writing happens on a background thread: a slow or full disk never holds up a check; a line
    that cannot be queued or written is dropped and counted (``guardrail.decision_log.dropped``).
    """

    path: str = Field(min_length=1, description="The log file; relative paths are relative to the working directory.")
    max_bytes: int = Field(
        default=100 * 1024 * 1024, ge=1024, description="Size at which the file is rotated (default 100 MiB)."
    )
    backups: int = Field(default=5, ge=0, le=1000, description="Rotated files kept (PATH.1 ... PATH.N).")
    capture_content: bool | None = Field(
        default=None,
        description="Write the prompt and answer text on each line. null: as the guard's content capture (spans); "
        "otherwise only the answer's SHA-256 is written.",
    )
    queue_size: int = Field(default=10_000, ge=1, description="Lines waiting for the disk before new ones are dropped.")

    @model_validator(mode="before")
    @classmethod
    def _path_alone(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value


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
    thresholds: dict[Dimension, Threshold] = Field(default_factory=dict)
    regions: dict[str, Region] = Field(default_factory=dict)
    actions: dict[str, Action] = Field(default_factory=dict)
    on_error: Literal["block", "allow"] = Field(
        default="block", description="What to do when scoring fails or times out (fail closed)."
    )
    error_action: str | None = Field(
        default=None, description="Action used when on_error is block (default: the block action)."
    )
    timeout_ms: float = Field(
        default=DEFAULT_TIMEOUT_MS,
        gt=0,
        description="Scoring time limit of one check, in milliseconds (default 10 s); a check that takes longer "
        "counts as a scoring failure (on_error).",
    )
    max_chars: int = Field(
        default=DEFAULT_MAX_CHARS,
        ge=2,
        description="Longest answer scored whole, in characters (default 64,000); longer ones follow `oversize`. "
        "A longer prompt is cut to its first max_chars characters.",
    )
    oversize: Literal["error", "truncate"] = Field(
        default="error",
        description="An answer longer than max_chars. error (default): a scoring failure, so on_error decides "
        "(block: fail closed); truncate: score its first and last max_chars/2 characters only.",
    )
    streaming: Streaming = Field(default_factory=Streaming, description="How streamed answers are guarded.")
    normalize: bool = Field(
        default=True,
        description="Score answers as a reader sees them: strip invisible characters, decode base64, hex, "
        "URL-encoding, rot13 and reversed text, fold look-alike letters and l33t digits, drop emoji and "
        "separators between letters. An ordinary answer is scored as it is.",
    )
    languages: Languages = Field(default_factory=Languages, description="Languages the scorer reads; the rest.")
    scorer: ScorerSettings = Field(default_factory=ScorerSettings, description="How checks reach the scorer.")
    capture_content: bool | None = Field(
        default=None,
        description="Record prompt, answer and delivered text on spans (capped at 4096 characters). null: follow "
        "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT; a Guard's capture_content argument overrides both.",
    )
    shadow: str | None = Field(
        default=None,
        description="A candidate policy (shipped name or path, relative to this file) decided on the same scores "
        "beside this one and recorded with each verdict, never applied. Not inherited by extends.",
    )
    decision_log: DecisionLogSettings | None = Field(
        default=None, description="Append one JSON line per decision to a file: its path, or {path, max_bytes, ...}."
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # YAML reads `version: 1.0` as a float; accept it as the text the author wrote.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="wrap")
    @classmethod
    def _actions_defined(cls, data: Any, handler: ModelWrapValidatorHandler[Policy]) -> Policy:
        # Checked on the raw input beside the schema, not after it: every unknown action is then
        # reported in the same run as every other problem of the file.
        return _validated(cls, data, handler, _action_problems(data))

    def action(self, name: str) -> Action:
        """Return the action called ``name`` (policy-defined first, then built-in)."""
        return self.actions.get(name) or BUILTIN_ACTIONS[name]

    def content_hash(self) -> str:
        """SHA-256 of the resolved policy content (stable across key order and formatting).

        The shadow candidate and the decision log are left out: they record decisions, they do not
        change one, so adding them keeps the policy's revision.
        """
        content = self.model_dump(mode="json", exclude={"shadow", "decision_log"})
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _action_problems(data: Any) -> list[InitErrorDetails]:
    """Every action a raw policy mapping names but does not define, and every fallback that is a rewrite."""
    if not isinstance(data, Mapping):
        return []  # a Policy instance was checked when it was built; anything else fails the schema

    def entries(section: str) -> list[tuple[Any, Mapping[str, Any]]]:
        raw = data.get(section)
        items = raw.items() if isinstance(raw, Mapping) else ()
        return [(name, spec) for name, spec in items if isinstance(spec, Mapping)]

    # An entry that breaks the schema still defines its name: no second error for every use of it.
    raw_actions = data.get("actions")
    defined = dict(raw_actions) if isinstance(raw_actions, Mapping) else {}
    known = {name: spec.type for name, spec in BUILTIN_ACTIONS.items()}
    known |= {name: spec.get("type") if isinstance(spec, Mapping) else None for name, spec in defined.items()}
    named = [((section, name, "action"), spec.get("action", "block"))
             for section in ("thresholds", "regions") for name, spec in entries(section)]  # fmt: skip
    if data.get("error_action") is not None:
        named.append((("error_action",), data["error_action"]))
    languages = data.get("languages")
    if isinstance(languages, Mapping) and languages.get("other", "score") != "score":
        named.append((("languages", "other"), languages["other"]))
    named += [(("actions", name, "fallback"), spec.get("fallback", "block"))
              for name, spec in entries("actions") if spec.get("type") == "rewrite"]  # fmt: skip
    problems = []
    for loc, action in named:
        if not isinstance(action, str):
            continue  # the schema reports the wrong type
        if action not in known:
            message = f"unknown action {action!r}; defined: {', '.join(sorted(map(str, known)))}"
            if loc == ("languages", "other"):
                message += "; or score"
        elif loc[-1] == "fallback" and known[action] == "rewrite":
            message = f"{action!r} is a rewrite; a fallback must not be"
        else:
            continue
        problems.append(_problem(loc, action, message))
    return problems


def merge(base: Mapping[str, Any], child: Mapping[str, Any]) -> dict[str, Any]:
    """Merge two raw policy mappings: ``child`` overrides ``base``.

    ``thresholds``, ``regions`` and ``actions`` merge entry by entry, so a child adds or replaces
    one entry and keeps the rest; an entry set to ``null`` removes the inherited one. A threshold
    merges field by field (a child can move one bound), and so do ``streaming``, ``scorer`` and
    ``languages``. Any other key is replaced whole.
    ``extends`` and ``shadow`` are not inherited.
    """
    out: dict[str, Any] = {k: v for k, v in base.items() if k not in _NOT_INHERITED}
    for key, value in child.items():
        inherited = out.get(key)
        field_by_field = key in ("streaming", "scorer", "languages")
        if field_by_field and isinstance(value, Mapping) and isinstance(inherited, Mapping):
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
_NOT_INHERITED = frozenset({"extends", "shadow"})
