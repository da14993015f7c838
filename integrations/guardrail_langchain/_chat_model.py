"""``GuardedChatModel``: a LangChain chat model that checks every answer of the model it wraps."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any, cast

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput, ModelProfile
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig, ensure_config, patch_config
from langchain_core.tools import BaseTool
from pydantic import BaseModel, PrivateAttr, model_validator
from typing_extensions import Self

from guardrail import (
    CallSpans,
    ChoiceVerdict,
    Guard,
    GuardrailViolation,
    ModelCall,
    PolicySet,
    Verdict,
    deciding,
    default_policy,
)
from guardrail_langchain._common import (
    METADATA_KEY,
    GuardChoice,
    context_handlers_hidden,
    guarded_message,
    hidden_aiter,
    hidden_iter,
    last_prompt,
    model_call,
    nested_callbacks,
    reask_messages,
    request_metadata,
    result_reply,
    revised_text,
    stream_reply,
    with_usage_of,
)
from guardrail_langchain._configured import configured, rebound
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

    Settings for the wrapped model may be given to the wrapper, as to the model itself:
    ``GuardedChatModel(model=m, temperature=0, stop=["\\n\\n"])`` builds ``m`` again with them, by its
    own class; a setting ``m`` does not have is refused. ``_get_ls_params`` and ``_llm_type`` are the
    wrapped model's, so traces name its provider and model. Callback handlers see one chat-model run
    per call (one start, one end, one usage record, re-asks included); tracers also see the wrapped
    model's run nested in it.

    Attributes:
        model: The chat model whose answers are checked.
        guard: The guard to use; default: the process-wide shared guard of ``policy``
            (:func:`guardrail.shared_guard`: the model loads once per process, so building wrappers is
            cheap).
        policy: A shipped policy name or a YAML path; default: ``$GUARDRAIL_POLICY``, else ``default``
            (set from it when neither ``guard`` nor ``policies`` is given).
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

    @model_validator(mode="before")
    @classmethod
    def _forward_settings(cls, data: Any) -> Any:
        """Settings that are not the wrapper's configure the wrapped model (see the class docs)."""
        if not isinstance(data, dict) or not isinstance(data.get("model"), BaseChatModel):
            return data  # pydantic reports the missing or wrong model
        own = {name for name, field in cls.model_fields.items() for name in (name, field.alias) if name}
        settings = {key: value for key, value in data.items() if key not in own}
        if not settings:
            return data
        kept = {key: value for key, value in data.items() if key in own}
        return {**kept, "model": configured(data["model"], settings, cls.__name__)}

    @model_validator(mode="after")
    def _build_guard(self) -> Self:
        if self.guard is None and self.policy is None and self.policies is None:
            self.policy = default_policy()
        self._choice = GuardChoice(self.guard, self.policy, self.policies)
        return self

    # -- identity: the wrapped model's, so that traces and LangChain's choices see the real model ------

    @property
    def _llm_type(self) -> str:
        return self.model._llm_type

    @property
    def _identifying_params(self) -> dict[str, Any]:
        guarded = {f"guardrail_{key}": value for key, value in self._choice.describe().items()}
        return {**self.model._identifying_params, **guarded}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        kwargs.pop(_CONFIG, None)
        return self.model._get_ls_params(stop=stop, **kwargs)

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
        return rebound(self.model.bind_tools(tools, **kwargs), self.model, self)

    def with_structured_output(
        self, schema: dict[str, Any] | type, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, dict[str, Any] | BaseModel]:
        """Structured output as the wrapped model makes it, every answer checked on its way.

        The wrapped model's own ``with_structured_output`` builds the runnable, so its methods
        (``function_calling``, ``json_mode``, ``json_schema``...) and options are its own; its model
        calls go through this guard. What is checked is the text the model returns: the tool call's
        arguments (as ``name({json})``) for tool-based methods, the JSON text for the others. A
        blocked answer has no structure left: the parsed result is ``None`` (with ``include_raw``,
        ``raw`` holds the policy's message), or ``GuardrailViolation`` with ``raise_on_block``.

        Example:
            >>> guarded.with_structured_output(Joke, method="json_schema").invoke("A cat joke")  # doctest: +SKIP
            Joke(setup='...', punchline='...')
        """
        built = self.model.with_structured_output(schema, include_raw=include_raw, **kwargs)
        return rebound(built, self.model, self)

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
        config = _with_run_id(config)
        return super().stream(input, config, stop=stop, **{_CONFIG: config, **kwargs})

    def astream(
        self, input: LanguageModelInput, config: RunnableConfig | None = None, *, stop: list[str] | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[AIMessageChunk]:  # fmt: skip
        """As ``BaseChatModel.astream``; text is released only as the policy's ``streaming`` block allows."""
        config = _with_run_id(config)
        return super().astream(input, config, stop=stop, **{_CONFIG: config, **kwargs})

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
            reasked: list[list[BaseMessage]] = [[] for _ in result.generations]

            def reask_for(choice: int) -> Callable[[str, str], str]:
                def reask(previous: str, feedback: str) -> str:
                    again = reask_messages(messages, previous, feedback)
                    revised = generate(spans, self.model, again, config, stop, kwargs).generations[0].message
                    reasked[choice].append(revised)
                    return revised_text(revised)

                return reask

            outcomes = [
                check_parts(guard, g.message, n, prompt, metadata, reask_for(n))
                for n, g in enumerate(result.generations)
            ]
            spans.record(_deciding(outcomes))
        return self._guarded(result, outcomes, reasked)

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
            reasked: list[list[BaseMessage]] = [[] for _ in result.generations]

            def reask_for(choice: int) -> Callable[[str, str], Awaitable[str]]:
                async def reask(previous: str, feedback: str) -> str:
                    again = reask_messages(messages, previous, feedback)
                    revised = (await agenerate(spans, self.model, again, config, stop, kwargs)).generations[0].message
                    reasked[choice].append(revised)
                    return revised_text(revised)

                return reask

            choices = enumerate(result.generations)
            outcomes = await asyncio.gather(
                *(acheck_parts(guard, g.message, n, prompt, metadata, reask_for(n)) for n, g in choices)
            )
            spans.record(_deciding(outcomes))
        return self._guarded(result, outcomes, reasked)

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
            upstream = hidden_iter(self.model.stream(messages, config, stop=stop, **kwargs))
            raw = model.wrap(upstream, stream_reply)
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
            upstream = hidden_aiter(self.model.astream(messages, config, stop=stop, **kwargs))
            raw = model.awrap(upstream, stream_reply)
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
        """Config for the wrapped model's call (its run nested in ours, seen by tracers only) and our metadata."""
        config: RunnableConfig = kwargs.pop(_CONFIG, None) or ensure_config()
        if run_manager is not None:
            callbacks, metadata = nested_callbacks(run_manager), run_manager.metadata
        else:  # a stream: LangChain hands _stream no run manager, but stream() chose our run's id
            callbacks = nested_callbacks(config.get("callbacks"), config.get("run_id"))
            metadata = config.get("metadata")
        return patch_config(config, callbacks=callbacks), request_metadata(metadata)

    def _raise_if_blocked(self, verdict: Verdict) -> Verdict:
        if self.raise_on_block and verdict.final_decision == "block":
            raise GuardrailViolation(verdict)
        return verdict

    def _guarded(
        self, result: ChatResult, outcomes: Sequence[ChoiceVerdict | None], reasked: Sequence[Sequence[BaseMessage]]
    ) -> ChatResult:
        """Each generation as delivered, with its verdicts (a generation without any part is left as it is)
        and the token usage of the re-asks made for it."""
        generations = []
        for generation, outcome, again in zip(result.generations, outcomes, reasked, strict=True):
            if outcome is not None:
                self._raise_if_blocked(outcome.verdict)
                message = with_usage_of(guarded_message(generation.message, outcome), again)
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


def _with_run_id(config: RunnableConfig | None) -> RunnableConfig:
    """The call's config with the id our run will have (the caller's, else a new one): the wrapped model's
    run names it as its parent."""
    config = ensure_config(config)
    return config if config.get("run_id") is not None else {**config, "run_id": uuid.uuid4()}


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
    with spans.model(model_call(model, messages, stop, kwargs)) as span, context_handlers_hidden():
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
        with context_handlers_hidden():
            result = await model.agenerate([messages], stop=stop, **_generate_options(config), **kwargs)
        generations = cast("list[ChatGeneration]", result.generations[0])
        span.record(result_reply([g.message for g in generations]))
    return ChatResult(generations=generations, llm_output=result.llm_output)


def _generate_options(config: RunnableConfig) -> dict[str, Any]:
    """The config as ``BaseChatModel.invoke`` hands it to ``generate`` (the inner config has no run name or id:
    those are our run's)."""
    return {"callbacks": config.get("callbacks"), "tags": config.get("tags"), "metadata": config.get("metadata")}
