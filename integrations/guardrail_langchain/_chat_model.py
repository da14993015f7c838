"""``GuardedChatModel``: a LangChain chat model that checks every answer of the model it wraps."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput, ModelProfile
from langchain_core.messages import LC_AUTO_PREFIX, AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, ensure_config, patch_config
from langchain_core.tools import BaseTool
from pydantic import PrivateAttr, model_validator
from typing_extensions import Self

from guardrail import Guard, GuardrailViolation, PolicySet, Verdict
from guardrail._genai import CallSpans, ModelCall, call_spans
from guardrail_langchain._common import (
    METADATA_KEY,
    GuardChoice,
    answer_text,
    child_callbacks,
    guarded_message,
    last_prompt,
    model_call,
    quiet_callbacks,
    reask_messages,
    reply_of,
    request_metadata,
    revised_text,
    stream_reply,
)

# BaseChatModel hands _stream neither its run manager nor the call's config, so the public entry
# points carry the config to _stream/_generate in this keyword; it never reaches the wrapped model.
_CONFIG = "_guardrail_config"


class GuardedChatModel(BaseChatModel):
    """A chat model that checks the answers of ``model`` against a value policy.

    Use it wherever the wrapped model went: ``invoke``, ``batch``, ``stream``, their async twins, LCEL
    chains and ``bind_tools`` work unchanged. A blocked answer comes back as an ``AIMessage`` whose
    content is the policy's message; every checked answer carries its verdict
    (``Verdict.to_dict()``) in ``response_metadata["guardrail"]``. Streams are held back and checked
    window by window, as the policy's ``streaming`` block says. Answers without text (tool calls
    only) pass unchecked.

    Attributes:
        model: The chat model whose answers are checked.
        guard: The guard to use; default: a ``Guard`` built from ``policy``.
        policy: A shipped policy name or a YAML path (default: ``$GUARDRAIL_POLICY``, else ``default``).
        policies: A policy set picking the policy per call from ``config["metadata"]``.
        raise_on_block: Raise ``GuardrailViolation`` instead of returning the policy's message.

    Example:
        >>> from langchain_core.language_models import FakeListChatModel
        >>> model = GuardedChatModel(model=FakeListChatModel(responses=["Drink water and rest."]))  # doctest: +SKIP
        >>> answer = model.invoke("I have a cold.")  # doctest: +SKIP
        >>> answer.content, answer.response_metadata["guardrail"]["decision"]  # doctest: +SKIP
        ('Drink water and rest.', 'allow')
    """

    model: BaseChatModel
    guard: Guard | None = None
    policy: str | None = None
    policies: PolicySet | None = None
    raise_on_block: bool = False

    _choice: GuardChoice = PrivateAttr()

    @model_validator(mode="after")
    def _build_guard(self) -> Self:
        self._choice = GuardChoice(self.guard, self.policy, self.policies)
        return self

    # -- identity: LangChain reads these for tracing and to pick a structured-output strategy ----------

    @property
    def _llm_type(self) -> str:
        return f"guarded-{self.model._llm_type}"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": self.model._llm_type, **self._choice.describe()}

    @property
    def model_name(self) -> str:
        """The wrapped model's name (``create_agent`` reads it to pick a structured-output strategy)."""
        name = getattr(self.model, "model_name", None) or getattr(self.model, "model", None)
        return name if isinstance(name, str) else self._llm_type

    def _resolve_model_profile(self) -> ModelProfile | None:
        return self.model.profile

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools as the wrapped model binds them; its keyword arguments reach it on every call.

        Example:
            >>> guarded.bind_tools([get_weather]).invoke("Weather in Paris?").tool_calls  # doctest: +SKIP
        """
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        bound = self.model.bind_tools(tools, **kwargs)
        if not isinstance(bound, RunnableBinding) or bound.bound is not self.model:
            raise TypeError(
                f"{type(self.model).__name__}.bind_tools returned {type(bound).__name__}, not the model bound "
                "to keyword arguments; GuardedChatModel can only carry such arguments over to the wrapped model"
            )
        return self.bind(**bound.kwargs)

    # -- entry points: carry the call's config (see _CONFIG) -------------------------------------------

    def invoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:  # fmt: skip
        """As ``BaseChatModel.invoke``; the answer is checked (see the class docs)."""
        return super().invoke(input, config, stop=stop, **{_CONFIG: ensure_config(config), **kwargs})

    async def ainvoke(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AIMessage:  # fmt: skip
        """As ``BaseChatModel.ainvoke``; the answer is checked (see the class docs)."""
        return await super().ainvoke(input, config, stop=stop, **{_CONFIG: ensure_config(config), **kwargs})

    def stream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> Iterator[AIMessageChunk]:  # fmt: skip
        """As ``BaseChatModel.stream``; text is released only as the policy's ``streaming`` block allows."""
        return super().stream(input, config, stop=stop, **{_CONFIG: ensure_config(config), **kwargs})

    def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:  # fmt: skip
        """As ``BaseChatModel.astream``; text is released only as the policy's ``streaming`` block allows."""
        return super().astream(input, config, stop=stop, **{_CONFIG: ensure_config(config), **kwargs})

    def _get_invocation_params(self, stop: list[str] | None = None, **kwargs: Any) -> dict[str, Any]:
        kwargs.pop(_CONFIG, None)
        return super()._get_invocation_params(stop=stop, **kwargs)

    def _get_llm_string(self, stop: list[str] | None = None, **kwargs: Any) -> str:
        kwargs.pop(_CONFIG, None)  # a cache key must not depend on the call's callbacks
        return super()._get_llm_string(stop=stop, **kwargs)

    # -- LangChain's hooks ------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config, metadata = self._inner_call(run_manager, kwargs)
        guard = self._choice.pick(metadata)
        with self._call_spans(guard, model_call(self.model, messages, stop, kwargs), metadata) as spans:
            answer = _invoke(spans, self.model, messages, config, stop, kwargs)
            text = answer_text(answer)
            if text is None:
                return _result(answer)

            def reask(previous: str, feedback: str) -> str:
                again = reask_messages(messages, previous, feedback)
                return revised_text(_invoke(spans, self.model, again, config, stop, kwargs))

            verdict = guard.enforce(text, last_prompt(messages), metadata, reask=reask)
            spans.record(verdict)
        return _result(guarded_message(answer, self._raise_if_blocked(verdict)))

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config, metadata = self._inner_call(run_manager, kwargs)
        guard = self._choice.pick(metadata)
        with self._call_spans(guard, model_call(self.model, messages, stop, kwargs), metadata) as spans:
            answer = await _ainvoke(spans, self.model, messages, config, stop, kwargs)
            text = answer_text(answer)
            if text is None:
                return _result(answer)

            async def reask(previous: str, feedback: str) -> str:
                again = reask_messages(messages, previous, feedback)
                return revised_text(await _ainvoke(spans, self.model, again, config, stop, kwargs))

            verdict = await guard.aenforce(text, last_prompt(messages), metadata, reask=reask)
            spans.record(verdict)
        return _result(guarded_message(answer, self._raise_if_blocked(verdict)))

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        config, metadata = self._inner_call(run_manager, kwargs)
        guard = self._choice.pick(metadata)
        call = model_call(self.model, messages, stop, kwargs)
        spans = self._call_spans(guard, call, metadata, streamed=True)
        with spans.model(call, end=False) as model:  # open while the answer streams
            raw = model.wrap(self.model.stream(messages, config, stop=stop, **kwargs), stream_reply)
        upstream = (piece for chunk in raw for piece in _split(chunk))
        stream = guard.stream(upstream, last_prompt(messages), metadata, text=_chunk_text, rebuild=_rebuild)
        answer_id = None
        for chunk in spans.iterate(stream):
            answer_id = chunk.id or answer_id
            if not self._stopping(stream.verdict):
                yield ChatGenerationChunk(message=chunk)
        yield ChatGenerationChunk(message=self._last_chunk(stream.verdict, answer_id))

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        config, metadata = self._inner_call(run_manager, kwargs)
        guard = self._choice.pick(metadata)
        call = model_call(self.model, messages, stop, kwargs)
        spans = self._call_spans(guard, call, metadata, streamed=True)
        with spans.model(call, end=False) as model:
            raw = model.awrap(self.model.astream(messages, config, stop=stop, **kwargs), stream_reply)
        upstream = (piece async for chunk in raw for piece in _split(chunk))
        stream = guard.astream(upstream, last_prompt(messages), metadata, text=_chunk_text, rebuild=_rebuild)
        answer_id = None
        async for chunk in await spans.aiterate(stream):
            answer_id = chunk.id or answer_id
            if not self._stopping(stream.verdict):
                yield ChatGenerationChunk(message=chunk)
        yield ChatGenerationChunk(message=self._last_chunk(stream.verdict, answer_id))

    # -- shared, I/O-free -------------------------------------------------------------------------------

    def _call_spans(self, guard: Guard, call: ModelCall, metadata: dict[str, Any], streamed: bool = False) -> CallSpans:
        """The ``guardrail.call`` span of one call: the model call, checks and rewrites nest under it."""
        return call_spans(guard, call, integration="langchain", metadata=metadata, streamed=streamed)

    @staticmethod
    def _inner_call(
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None, kwargs: dict[str, Any]
    ) -> tuple[RunnableConfig, dict[str, Any]]:
        """Config for the wrapped model's call (its run nested in ours when we know our run) and our metadata."""
        config: RunnableConfig = kwargs.pop(_CONFIG, None) or ensure_config()
        if run_manager is not None:
            callbacks, metadata = child_callbacks(run_manager), run_manager.metadata
        else:
            callbacks, metadata = config.get("callbacks"), config.get("metadata")
        inner = patch_config(config, callbacks=quiet_callbacks(callbacks))  # type: ignore[arg-type]
        return inner, request_metadata(metadata)

    def _raise_if_blocked(self, verdict: Verdict) -> Verdict:
        if self.raise_on_block and verdict.final_decision == "block":
            raise GuardrailViolation(verdict)
        return verdict

    def _stopping(self, verdict: Verdict | None) -> bool:
        """True once a stream blocked and the caller wants an exception: the block message is not sent."""
        # The guarded stream ends right after its block message, closing the upstream; the exception is
        # raised after that, from _last_chunk.
        return self.raise_on_block and verdict is not None and verdict.final_decision == "block"

    def _last_chunk(self, verdict: Verdict | None, answer_id: str | None) -> AIMessageChunk:
        """The stream's closing chunk, with the verdict (``None``: nothing was checked, e.g. tool calls only)."""
        metadata = {} if verdict is None else {METADATA_KEY: self._raise_if_blocked(verdict).to_dict()}
        return AIMessageChunk(content="", id=answer_id, response_metadata=metadata, chunk_position="last")


def _result(message: BaseMessage) -> ChatResult:
    return ChatResult(generations=[ChatGeneration(message=message)])


def _invoke(
    spans: CallSpans, model: BaseChatModel, messages: list[BaseMessage], config: RunnableConfig,
    stop: list[str] | None, kwargs: dict[str, Any],
) -> BaseMessage:  # fmt: skip
    """``model.invoke`` inside a model-call span (the first call, or a re-ask under ``guardrail.reask``)."""
    with spans.model(model_call(model, messages, stop, kwargs)) as span:
        answer = model.invoke(messages, config, stop=stop, **kwargs)
        span.record(reply_of(answer))
    return answer


async def _ainvoke(
    spans: CallSpans, model: BaseChatModel, messages: list[BaseMessage], config: RunnableConfig,
    stop: list[str] | None, kwargs: dict[str, Any],
) -> BaseMessage:  # fmt: skip
    """Async twin of :func:`_invoke`."""
    with spans.model(model_call(model, messages, stop, kwargs)) as span:
        answer = await model.ainvoke(messages, config, stop=stop, **kwargs)
        span.record(reply_of(answer))
    return answer


def _chunk_text(chunk: AIMessageChunk) -> str:
    return str(chunk.text)


def _rebuild(template: AIMessageChunk, text: str) -> AIMessageChunk:
    return AIMessageChunk(content=text, id=template.id)


def _split(chunk: BaseMessage) -> Iterable[AIMessageChunk]:
    """An upstream chunk as its text and the rest (tool-call chunks, usage, finish reason, other blocks).

    Held-back text is re-chunked as it is released, so a chunk that carried text and more would
    repeat the rest; split, the rest goes out once, in its place after the text before it.
    """
    if not isinstance(chunk, AIMessageChunk):  # a model without streaming yields its whole AIMessage
        chunk = AIMessageChunk(**chunk.model_dump(exclude={"type"}))
    # Run ids ("lc_run-...") of the wrapped model's run give way to our run's, so that every chunk of
    # the answer, and the answer as stored, carry one id; provider ids are kept.
    own_id = None if chunk.id is None or chunk.id.startswith(LC_AUTO_PREFIX) else chunk.id
    text = str(chunk.text)
    if text:
        yield AIMessageChunk(content=text, id=own_id)
    content: str | list[str | dict[str, Any]] = (
        "" if isinstance(chunk.content, str) else [b for b in chunk.content if not _is_text_block(b)]
    )
    rest = chunk.model_copy(update={"content": content, "id": own_id, "chunk_position": None})
    if content or rest.tool_call_chunks or rest.additional_kwargs or rest.response_metadata or rest.usage_metadata:
        yield rest


def _is_text_block(block: str | dict[str, Any]) -> bool:
    return isinstance(block, str) or block.get("type") == "text"
