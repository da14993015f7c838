"""``ValueGuardrail``: the value guard as a LiteLLM proxy guardrail (``mode: post_call``).

The proxy builds the class from ``config.yaml``; every key under the guardrail's ``litellm_params``
other than ``guardrail``, ``mode``, ``default_on`` and ``stream_scope`` reaches ``__init__`` as a
keyword argument (together with litellm's own defaults, which land in ``**kwargs``)::

    guardrails:
      - guardrail_name: value-guardrail
        litellm_params:
          guardrail: guardrail_litellm.ValueGuardrail
          mode: post_call
          default_on: true
          policy: default            # or policy_set: /path/to/policies.yaml
          on_block: message          # or error: HTTP 400 instead of the policy message

Every answer route the proxy serves is guarded: chat completions (``/v1/chat/completions``), the
Responses API (``/v1/responses``) and Anthropic messages (``/v1/messages``), streamed and not; every
part of an answer is checked (each choice's content, reasoning and tool calls, see
:mod:`guardrail_litellm._parts`). Non-streamed answers go through ``async_post_call_success_hook``;
streamed ones only through ``async_post_call_streaming_iterator_hook``: a chat stream releases each
part as it passes, a Responses API or Anthropic stream is held whole until checked. Re-asking (a
``reask`` rewrite) is done on the chat route; on the others a reask rewrite applies its fallback.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from fastapi import HTTPException
from litellm import ModelResponse
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.types.guardrails import GuardrailEventHooks
from litellm.types.llms.openai import ResponsesAPIResponse
from litellm.types.utils import ModelResponseStream

from guardrail import AsyncReask, CallSpans, Guard, ModelReply, Output, PolicyError, PolicySet, Scorer, Verdict
from guardrail_litellm._events import AnthropicEvents, ResponsesEvents, is_responses_event
from guardrail_litellm._guards import PolicySource, shared_scorer
from guardrail_litellm._mapping import attach, blocked, prompt_of, reask_messages, reask_text, requested_choices
from guardrail_litellm._parts import (
    anthropic_outputs,
    chat_outputs,
    deliver_anthropic,
    deliver_chat,
    deliver_responses,
    responses_outputs,
)
from guardrail_litellm._spans import model_call, reply_of, stream_reply
from guardrail_litellm._streams import AsyncChatStream

logger = logging.getLogger(__name__)

OnBlock = Literal["message", "error"]
DECISION_HEADER = "x-guardrail-decision"
"""Response header (non-streamed answers) carrying the final decision."""
# Sampling parameters a re-ask repeats; tools and streaming are left out, a re-ask wants text.
_REASK_PARAMS = ("temperature", "top_p", "max_tokens", "max_completion_tokens", "stop", "seed",
                 "presence_penalty", "frequency_penalty", "user")  # fmt: skip
_STATUS = {"allow": "success", "log": "guardrail_flagged", "block": "guardrail_intervened",
           "rewrite": "guardrail_intervened"}  # fmt: skip


class ValueGuardrail(CustomGuardrail):
    """Checks proxy answers against a value policy; blocked answers get the policy message or an HTTP 400.

    Args:
        policy: A shipped policy name or a YAML path (default: ``$GUARDRAIL_POLICY``, else ``default``).
        policy_set: A policy-set YAML path instead (see :class:`~guardrail.PolicySet`): the guard is
            picked per request by the set's ``key``: with ``key: model`` the request's model (models
            the set does not list get its default), otherwise the virtual key's or team's metadata.
        on_block: ``message`` (default) delivers the policy message as the answer; ``error`` rejects
            the request with HTTP 400 carrying the verdict.
        policy_from_request: Also let the client's request ``metadata`` name the deployment (off by
            default: a client could pick a laxer policy of the set).
        router: The litellm ``Router`` that re-asks the model for ``reask`` rewrites; default: the
            proxy's own router. Without one, reask rewrites apply their fallback.
        scorer: Any :class:`~guardrail.Scorer` (default: the shipped model, loaded at start-up).
        **kwargs: ``CustomGuardrail``'s arguments (``guardrail_name``, ``event_hook``, ``default_on``...).

    Example:
        >>> guardrail = ValueGuardrail(policy="strict", event_hook="post_call", default_on=True)  # doctest: +SKIP
        >>> litellm.callbacks.append(guardrail)  # doctest: +SKIP
    """

    def __init__(
        self,
        policy: PolicySource | None = None,
        policy_set: str | os.PathLike[str] | None = None,
        on_block: OnBlock = "message",
        policy_from_request: bool = False,
        router: Any = None,
        scorer: Scorer | None = None,
        **kwargs: Any,
    ) -> None:
        if policy is not None and policy_set is not None:
            raise ValueError(f"pass policy or policy_set, not both; got policy={policy!r}, policy_set={policy_set!r}")
        if on_block not in ("message", "error"):
            raise ValueError(f"on_block must be 'message' or 'error', got {on_block!r}")
        kwargs.setdefault("supported_event_hooks", [GuardrailEventHooks.post_call])
        super().__init__(**kwargs)
        # Load the model and the policies now, so a typo fails at proxy start-up, not on a request.
        scorer = scorer if scorer is not None else shared_scorer()
        self.policies: PolicySet | None = PolicySet.load(policy_set, scorer=scorer) if policy_set else None
        self.guard: Guard = self.policies.default if self.policies else Guard(policy, scorer=scorer)
        self.on_block: OnBlock = on_block
        self.policy_from_request = policy_from_request
        self.router = router

    @classmethod
    def get_supported_event_hooks(cls) -> list[GuardrailEventHooks]:
        """Only ``post_call``: the guard judges answers."""
        return [GuardrailEventHooks.post_call]

    # -- proxy hooks ----------------------------------------------------------------------

    async def async_post_call_success_hook(self, data: dict, user_api_key_dict: Any, response: Any) -> Any:
        """Check a non-streamed answer (chat, Responses API, Anthropic); deliver what the policy lets through."""
        shape = _shape_of(response)
        if shape is None:
            return None  # embeddings, images...: no answer to judge
        read, deliver = _SHAPES[shape]
        if shape == "chat":
            self._require_choices(data, streamed=False)
        pieces = read(response)
        if not pieces:
            return None  # an empty answer: nothing to judge
        guard, metadata = self._guard_for(data)
        start = time.time()
        with self._spans(guard, data, metadata, response) as spans:
            # The proxy made the model call before this hook: its span is recorded now, from the answer.
            with spans.model(start_time=_started(data)) as model:
                model.record(reply_of(response) if shape == "chat" else ModelReply())
            reask = self._reask(data, spans) if shape == "chat" else None
            verdicts = await guard.aenforce_outputs(pieces, _prompt(data), metadata, reask=reask)
            verdict = attach(response, verdicts)
            spans.record(verdict)
        assert verdict is not None  # pieces were checked
        self._record(data, verdict, start)
        if blocked(verdict) and self.on_block == "error":
            raise _rejection(verdict)
        deliver(response, verdicts)
        hidden = response.setdefault("_hidden_params", {}) if isinstance(response, dict) else response._hidden_params
        headers = hidden.setdefault("additional_headers", {}) if isinstance(hidden, dict) else None
        if isinstance(headers, dict):
            headers[DECISION_HEADER] = verdict.final_decision
        return response

    async def async_post_call_streaming_iterator_hook(
        self, user_api_key_dict: Any, response: Any, request_data: dict
    ) -> AsyncGenerator[Any, None]:
        """Guard a streamed answer: nothing goes out before it passed (see the module docs for each route)."""
        source = response.__aiter__()
        try:
            first = await source.__anext__()
        except StopAsyncIteration:
            return
        if isinstance(first, ModelResponseStream):
            self._require_choices(request_data, streamed=True)
        guard, metadata = self._guard_for(request_data)
        start = time.time()
        spans = self._spans(guard, request_data, metadata, response, streamed=True)
        with spans.model(end=False, start_time=_started(request_data)) as model:  # open while the answer streams
            upstream = model.awrap(_prepend(first, source, response), stream_reply)
        prompt = _prompt(request_data)
        stream: AsyncChatStream | ResponsesEvents | AnthropicEvents
        if isinstance(first, ModelResponseStream):
            stream = AsyncChatStream(guard, upstream, prompt, metadata)
        elif is_responses_event(first):
            stream = ResponsesEvents(guard, upstream, prompt, metadata)
        else:  # Anthropic's server-sent events, as bytes
            stream = AnthropicEvents(guard, upstream, prompt, metadata)
        chunks = await spans.aiterate(stream)
        try:
            async for chunk in chunks:
                if blocked(stream.verdict) and self.on_block == "error":
                    raise _rejection(stream.verdict)  # type: ignore[arg-type]  # blocked() checked it
                yield chunk
        finally:
            await chunks.aclose()  # ends the trace and closes the guarded stream, which closes the model call
        if stream.verdict is not None:
            self._record(request_data, stream.verdict, start)

    # -- helpers ----------------------------------------------------------------------------

    def _guard_for(self, data: Mapping[str, Any]) -> tuple[Guard, dict[str, Any]]:
        model = data.get("model")
        metadata: dict[str, Any] = {"model": model}  # recorded on the verdict and its span
        if self.policies is None:
            return self.guard, metadata
        key, name = self.policies.key, None
        if key == "model":
            # Every request names a model: the ones the set does not list get its default policy.
            name = model if model in self.policies.names else None
        else:
            sources = [self._get_admin_metadata(dict(data))]  # key and team metadata: set by the operator
            if self.policy_from_request:
                sources += [data.get("metadata"), data.get("litellm_metadata")]
            name = next((s[key] for s in sources if isinstance(s, Mapping) and s.get(key) is not None), None)
        if name is not None:
            metadata[key] = name
        try:
            return self.policies.guard({key: name}), metadata
        except PolicyError as exc:
            raise HTTPException(status_code=400, detail={"error": f"value guardrail: {exc}"}) from exc

    @staticmethod
    def _require_choices(data: Mapping[str, Any], *, streamed: bool) -> None:
        try:
            requested_choices(data.get("n"), streamed=streamed)
        except (TypeError, ValueError) as exc:
            raise HTTPException(status_code=400, detail={"error": f"value guardrail: {exc}"}) from exc

    @staticmethod
    def _spans(
        guard: Guard, data: Mapping[str, Any], metadata: Mapping[str, Any], response: Any, streamed: bool = False
    ) -> CallSpans:
        # The request names the proxy's alias for a deployment; the answer knows the provider that served it.
        hidden = getattr(response, "_hidden_params", None)
        provider = hidden.get("custom_llm_provider") if isinstance(hidden, dict) else None
        provider = provider or getattr(response, "custom_llm_provider", None)  # a stream
        call = model_call(data, provider if isinstance(provider, str) else None, resolve=False)
        return guard.trace_call(call, integration="litellm.proxy", metadata=metadata, streamed=streamed)

    def _reask(self, data: Mapping[str, Any], spans: CallSpans) -> AsyncReask | None:
        router = self.router
        if router is None and "litellm.proxy.proxy_server" in sys.modules:
            # Inside the proxy: its router knows the request's model name. Never import the server module.
            router = getattr(sys.modules["litellm.proxy.proxy_server"], "llm_router", None)
        model, messages = data.get("model"), data.get("messages")
        if router is None or not isinstance(model, str) or not isinstance(messages, list):
            return None
        params = {k: data[k] for k in _REASK_PARAMS if data.get(k) is not None}

        async def reask(previous: str, feedback: str) -> str:
            kwargs = {"model": model, "messages": reask_messages(messages, previous, feedback), **params}
            with spans.model(model_call(kwargs, spans.call.provider, resolve=False)) as span:
                answer = await router.acompletion(stream=False, **kwargs)
                span.record(reply_of(answer))
            return reask_text(answer)

        return reask

    def _record(self, data: dict, verdict: Verdict, start: float) -> None:
        end = time.time()
        try:
            self.add_standard_logging_guardrail_information_to_request_data(
                guardrail_json_response=verdict.to_dict(), request_data=data,
                guardrail_status=_STATUS[verdict.final_decision],  # type: ignore[arg-type]
                start_time=start, end_time=end, duration=end - start,
                guardrail_provider="value-guardrail", event_type=GuardrailEventHooks.post_call,
            )  # fmt: skip
        except Exception:  # logging is a sink: a failure there must not change the answer's fate
            logger.warning("could not record the value guardrail verdict in litellm's logs", exc_info=True)


_SHAPES: Mapping[str, tuple[Callable[[Any], list[Output]], Callable[[Any, Sequence[Verdict]], None]]] = {
    "chat": (chat_outputs, deliver_chat),
    "responses": (responses_outputs, deliver_responses),
    "anthropic": (anthropic_outputs, deliver_anthropic),
}
"""How each answer shape is read into pieces and how the outcome is put back."""


def _shape_of(response: object) -> str | None:
    """Which answer shape a route returned: ``chat``, ``responses``, ``anthropic``, or ``None`` (not an answer)."""
    if isinstance(response, ModelResponse):
        return "chat"
    if isinstance(response, ResponsesAPIResponse):
        return "responses"
    if isinstance(response, Mapping) and response.get("type") == "message":
        return "anthropic"
    return None


def _prompt(data: Mapping[str, Any]) -> str | None:
    """The prompt of a request: its messages' last user text, or a Responses API request's ``input``."""
    return prompt_of(data["messages"] if data.get("messages") is not None else data.get("input"))


async def _prepend(first: Any, rest: AsyncIterator[Any], upstream: Any) -> AsyncIterator[Any]:
    """The stream again with its first item, already read, in front; closing it closes ``upstream``."""
    try:
        yield first
        async for item in rest:
            yield item
    finally:
        close = getattr(upstream, "aclose", None)
        if close is not None:
            await close()


def _started(data: Mapping[str, Any]) -> int | None:
    """When litellm began the model call (ns since the epoch), from its logging object; ``None`` when unknown."""
    start = getattr(data.get("litellm_logging_obj"), "start_time", None)
    return int(start.timestamp() * 1e9) if isinstance(start, datetime) else None


def _rejection(verdict: Verdict) -> HTTPException:
    return HTTPException(
        status_code=400,
        detail={"error": verdict.output or "blocked by the value guardrail", "guardrail": verdict.to_dict()},
    )
