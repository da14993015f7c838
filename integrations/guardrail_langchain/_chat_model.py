"""``GuardedChatModel``: a LangChain chat model that checks every answer of the model it wraps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput, ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig, ensure_config, patch_config
from langchain_core.tools import BaseTool
from pydantic import PrivateAttr, model_validator
from typing_extensions import Self

from guardrail import CallSpans, ChoiceVerdict, Guard, GuardrailViolation, ModelCall, PolicySet, Verdict, deciding
from guardrail_langchain._common import (
    METADATA_KEY,
    GuardChoice,
    child_callbacks,
    guarded_message,
    last_prompt,
    model_call,
    quiet_callbacks,
    reask_messages,
    request_metadata,
    result_reply,
    revised_text,
    stream_reply,
)
from guardrail_langchain._outputs import acheck_parts, check_parts
from guardrail_langchain._streamed import AsyncHeldAnswer, HeldAnswer

# BaseChatModel hands _stream neither its run manager nor the call's config, so the public entry
# points carry the config to _stream/_generate in this keyword; it never reaches the wrapped model.
_CONFIG = "_guardrail_config"


class GuardedChatModel(BaseChatModel):
    """A chat model that checks the answers of ``model`` against a value policy.

    Use it wherever the wrapped model went: ``invoke``, ``batch``, ``stream``, their async twins, LCEL
    chains and ``bind_tools`` work unchanged. Every part of every generation is checked: its text, its
    reasoning (``reasoning`` content blocks, ``additional_kwargs["reasoning_content"]``) and each tool
    call, as ``name({json arguments})``. A blocked answer comes back as an ``AIMessage`` whose content
    is the policy's message, without its reasoning or tool calls; every checked answer carries its
    verdicts in ``response_metadata["guardrail"]`` (see :data:`METADATA_KEY`). Streamed text is held
    back and checked window by window, as the policy's ``streaming`` block says; reasoning and
    tool-call chunks are held until the answer has ended and they passed.

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
        guard, prompt = self._choice.pick(metadata), last_prompt(messages)
        with self._call_spans(guard, model_call(self.model, messages, stop, kwargs), metadata) as spans:
            result = generate(spans, self.model, messages, config, stop, kwargs)

            def reask(previous: str, feedback: str) -> str:
                again = reask_messages(messages, previous, feedback)
                return revised_text(generate(spans, self.model, again, config, stop, kwargs).generations[0].message)

            outcomes = [
                check_parts(guard, g.message, n, prompt, metadata, reask) for n, g in enumerate(result.generations)
            ]
            spans.record(_deciding(outcomes))
        return self._guarded(result, outcomes)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        config, metadata = self._inner_call(run_manager, kwargs)
        guard, prompt = self._choice.pick(metadata), last_prompt(messages)
        with self._call_spans(guard, model_call(self.model, messages, stop, kwargs), metadata) as spans:
            result = await agenerate(spans, self.model, messages, config, stop, kwargs)

            async def reask(previous: str, feedback: str) -> str:
                again = reask_messages(messages, previous, feedback)
                revised = await agenerate(spans, self.model, again, config, stop, kwargs)
                return revised_text(revised.generations[0].message)

            choices = enumerate(result.generations)
            outcomes = await asyncio.gather(
                *(acheck_parts(guard, g.message, n, prompt, metadata, reask) for n, g in choices)
            )
            spans.record(_deciding(outcomes))
        return self._guarded(result, outcomes)

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
        answer = HeldAnswer(guard, raw, last_prompt(messages), metadata)
        answer_id = None
        for chunk in spans.iterate(answer):
            answer_id = chunk.id or answer_id
            if not self._stopping(answer.verdict):
                yield ChatGenerationChunk(message=chunk)
        yield ChatGenerationChunk(message=self._last_chunk(answer.outcome, answer_id))

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
        answer = AsyncHeldAnswer(guard, raw, last_prompt(messages), metadata)
        answer_id = None
        async for chunk in await spans.aiterate(answer):
            answer_id = chunk.id or answer_id
            if not self._stopping(answer.verdict):
                yield ChatGenerationChunk(message=chunk)
        yield ChatGenerationChunk(message=self._last_chunk(answer.outcome, answer_id))

    # -- shared, I/O-free -------------------------------------------------------------------------------

    def _call_spans(self, guard: Guard, call: ModelCall, metadata: dict[str, Any], streamed: bool = False) -> CallSpans:
        """The ``guardrail.call`` span of one call: the model call, checks and rewrites nest under it."""
        return guard.trace_call(call, integration="langchain", metadata=metadata, streamed=streamed)

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

    def _guarded(self, result: ChatResult, outcomes: Sequence[ChoiceVerdict | None]) -> ChatResult:
        """Each generation as delivered, with its verdicts (a generation without any part is left as it is)."""
        generations = []
        for generation, outcome in zip(result.generations, outcomes, strict=True):
            if outcome is not None:
                self._raise_if_blocked(outcome.verdict)
                message = guarded_message(generation.message, outcome)
                generation = ChatGeneration(message=message, generation_info=generation.generation_info)
            generations.append(generation)
        return ChatResult(generations=generations, llm_output=result.llm_output)

    def _stopping(self, verdict: Verdict | None) -> bool:
        """True once a stream blocked and the caller wants an exception: the block message is not sent."""
        # The guarded stream ends right after its block message, closing the upstream; the exception is
        # raised after that, from _last_chunk.
        return self.raise_on_block and verdict is not None and verdict.final_decision == "block"

    def _last_chunk(self, outcome: ChoiceVerdict | None, answer_id: str | None) -> AIMessageChunk:
        """The stream's closing chunk, with the verdicts (``None``: nothing was checked, e.g. an empty answer)."""
        if outcome is not None:
            self._raise_if_blocked(outcome.verdict)
        metadata = {} if outcome is None else {METADATA_KEY: outcome.to_dict()}
        return AIMessageChunk(content="", id=answer_id, response_metadata=metadata, chunk_position="last")


def _deciding(outcomes: Sequence[ChoiceVerdict | None]) -> Verdict | None:
    """The verdict that decides a call of one or more generations (``None``: nothing was checked)."""
    verdicts = [o.verdict for o in outcomes if o is not None]
    return deciding(verdicts) if verdicts else None


def generate(
    spans: CallSpans, model: BaseChatModel, messages: list[BaseMessage], config: RunnableConfig,
    stop: list[str] | None, kwargs: dict[str, Any],
) -> ChatResult:  # fmt: skip
    """Every generation of one model call (``invoke`` keeps only the first), inside a model-call span
    (the first call, or a re-ask under ``guardrail.reask``)."""
    with spans.model(model_call(model, messages, stop, kwargs)) as span:
        result = model.generate([messages], stop=stop, **_generate_options(config), **kwargs)
        generations = cast("list[ChatGeneration]", result.generations[0])
        span.record(result_reply([g.message for g in generations]))
    return ChatResult(generations=generations, llm_output=result.llm_output)


async def agenerate(
    spans: CallSpans, model: BaseChatModel, messages: list[BaseMessage], config: RunnableConfig,
    stop: list[str] | None, kwargs: dict[str, Any],
) -> ChatResult:  # fmt: skip
    """Async twin of :func:`generate`."""
    with spans.model(model_call(model, messages, stop, kwargs)) as span:
        result = await model.agenerate([messages], stop=stop, **_generate_options(config), **kwargs)
        generations = cast("list[ChatGeneration]", result.generations[0])
        span.record(result_reply([g.message for g in generations]))
    return ChatResult(generations=generations, llm_output=result.llm_output)


def _generate_options(config: RunnableConfig) -> dict[str, Any]:
    """The config as ``BaseChatModel.invoke`` hands it to ``generate`` (the inner config has no run name or id:
    those are our run's)."""
    return {"callbacks": config.get("callbacks"), "tags": config.get("tags"), "metadata": config.get("metadata")}
