"""``ScriptedChatModel``: an offline chat model that behaves like a provider's, answers from a script.

It has what LangChain's standard chat-model tests ask of a real model: the standard settings
(``model``, ``temperature``, ``max_tokens``, ``timeout``, ``stop``, ``max_retries``, ``api_key``,
``streaming``), tool calling with ``tool_choice``, structured output by tool calling, JSON schema
and JSON mode, usage metadata on invoke and on the last streamed chunk, a per-call ``model``
override and stop sequences. What it answers is deterministic:

- Text: ``replies[prompt]`` for the last human message, else ``default_reply``, cut at the first
  stop sequence. Streamed word by word.
- Tool calls: with tools bound and a human message last (or ``tool_choice`` forcing a call), one
  call of the chosen tool: the named ``tool_choice``, else a tool whose name the prompt mentions,
  else the first. Arguments follow the tool's JSON schema: integers and numbers are the prompt's
  numbers in order, strings ``field_values[name]``, else the prompt's next quoted text, else the
  prompt itself. After a tool result it answers in text.
- JSON (``response_format``): an object of the schema's properties (JSON schema), or of the keys
  the prompt quotes (JSON mode), filled as tool arguments are.

Usage counts words: the messages' for input, the answer's for output.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from operator import itemgetter
from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage, ToolMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.messages.tool import tool_call, tool_call_chunk
from langchain_core.output_parsers import JsonOutputKeyToolsParser, JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import PydanticToolsParser
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_json_schema, convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import ConfigDict, Field, SecretStr

DEFAULT_REPLY = "Hello! I am doing well, thank you for asking. How can I help you today?"
FIELD_VALUES = {
    "setup": "Why did the cat sit on the computer?",
    "punchline": "To keep an eye on the mouse.",
    "answer_style": "pirate",
    "location": "San Francisco, CA",
}
"""What string arguments and JSON fields of these names are (the standard tests' tools and jokes)."""

_QUOTED = re.compile(r"'([^']+)'|\"([^\"]+)\"")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


class ScriptedChatModel(BaseChatModel):
    """A deterministic offline chat model (see the module docs)."""

    model_name: str = Field(default="scripted-chat-1", alias="model")
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    max_retries: int = 2
    stop: list[str] | None = Field(default=None, alias="stop_sequences")
    api_key: SecretStr | None = None
    streaming: bool = False
    replies: dict[str, str] = Field(default_factory=dict)
    default_reply: str = DEFAULT_REPLY
    field_values: dict[str, Any] = Field(default_factory=lambda: dict(FIELD_VALUES))

    model_config = ConfigDict(populate_by_name=True)

    @property
    def _llm_type(self) -> str:
        return "scripted-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "temperature": self.temperature, "max_tokens": self.max_tokens}

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="scripted", ls_model_name=kwargs.get("model") or self.model_name, ls_model_type="chat"
        )
        temperature = kwargs.get("temperature", self.temperature)
        max_tokens = kwargs.get("max_tokens", self.max_tokens)
        stops = stop or self.stop
        if temperature is not None:
            params["ls_temperature"] = temperature
        if max_tokens is not None:
            params["ls_max_tokens"] = max_tokens
        if stops:
            params["ls_stop"] = stops
        return params

    # -- tools and structured output, as provider models offer them ------------------------------

    def bind_tools(
        self, tools: Sequence[Any], *, tool_choice: str | dict[str, Any] | bool | None = None, **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        """Bind tools in OpenAI's format; ``tool_choice`` is ``auto``, ``none``, ``any``/``required`` or a name."""
        formatted = [convert_to_openai_tool(t) for t in tools]
        names = [t["function"]["name"] for t in formatted]
        if isinstance(tool_choice, dict):
            tool_choice = tool_choice.get("function", {}).get("name") or tool_choice.get("name")
        if tool_choice is True:
            tool_choice = "any"
        if isinstance(tool_choice, str) and tool_choice not in {"auto", "none", "any", "required", *names}:
            raise ValueError(f"tool_choice {tool_choice!r} is not one of the bound tools {names}")
        if tool_choice is not None:
            kwargs["tool_choice"] = tool_choice
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(
        self,
        schema: dict[str, Any] | type,
        *,
        include_raw: bool = False,
        method: Literal["function_calling", "json_mode", "json_schema"] = "function_calling",
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Runnable[LanguageModelInput, Any]:
        """Structured output by tool calling, JSON schema (``response_format``) or JSON mode."""
        if kwargs:
            raise ValueError(f"unsupported arguments {kwargs}")
        is_model = isinstance(schema, type) and is_basemodel_subclass(schema)
        traced = {"kwargs": {"method": method, "strict": strict}, "schema": schema}
        parser: Runnable[Any, Any]
        if method == "function_calling":
            name = convert_to_openai_tool(schema)["function"]["name"]
            llm = self.bind_tools([schema], tool_choice=name, ls_structured_output_format=traced)
            parser = (
                PydanticToolsParser(tools=[schema], first_tool_only=True)  # type: ignore[list-item]
                if is_model
                else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
            )
        elif method in ("json_schema", "json_mode"):
            response_format = (
                {"type": "json_schema", "json_schema": {"schema": convert_to_json_schema(schema), "strict": strict}}
                if method == "json_schema"
                else {"type": "json_object"}
            )
            llm = self.bind(response_format=response_format, ls_structured_output_format=traced)
            parser = PydanticOutputParser(pydantic_object=schema) if is_model else JsonOutputParser()  # type: ignore[arg-type]
        else:
            raise ValueError(f"method must be function_calling, json_mode or json_schema, got {method!r}")
        if not include_raw:
            return llm | parser
        parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
        fallback = parsed.with_fallbacks(
            [RunnablePassthrough.assign(parsed=lambda _: None)], exception_key="parsing_error"
        )
        return RunnableMap(raw=llm) | fallback

    # -- answering ------------------------------------------------------------------------------

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if self.streaming:
            chunks = list(self._stream(messages, stop, run_manager, **kwargs))
            whole = chunks[0].message
            for chunk in chunks[1:]:
                whole += chunk.message
            message = AIMessage(**whole.model_dump(exclude={"type", "tool_call_chunks", "chunk_position"}))
            return ChatResult(generations=[ChatGeneration(message=message)])
        return ChatResult(generations=[ChatGeneration(message=self._answer(messages, stop, kwargs))])

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        answer = self._answer(messages, stop, kwargs)
        for piece in _pieces(answer):
            if run_manager is not None and isinstance(piece.content, str) and piece.content:
                run_manager.on_llm_new_token(piece.content, chunk=ChatGenerationChunk(message=piece))
            yield ChatGenerationChunk(message=piece)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        answer = self._answer(messages, stop, kwargs)
        for piece in _pieces(answer):
            if run_manager is not None and isinstance(piece.content, str) and piece.content:
                await run_manager.on_llm_new_token(piece.content, chunk=ChatGenerationChunk(message=piece))
            yield ChatGenerationChunk(message=piece)

    def _answer(self, messages: Sequence[BaseMessage], stop: list[str] | None, kwargs: dict[str, Any]) -> AIMessage:
        prompt = next((str(m.text) for m in reversed(messages) if isinstance(m, HumanMessage)), "")
        tools: list[dict[str, Any]] = kwargs.get("tools") or []
        choice = kwargs.get("tool_choice")
        response_format = kwargs.get("response_format")
        metadata = {"model_name": kwargs.get("model") or self.model_name, "model_provider": "scripted"}
        calls = []
        content = ""
        last_is_tool = bool(messages) and isinstance(messages[-1], ToolMessage)
        forced = choice not in (None, "auto", "none")
        if tools and choice != "none" and (forced or not last_is_tool):
            tool = self._pick(tools, choice, prompt)
            args = self._arguments(tool["function"].get("parameters") or {}, prompt)
            calls = [tool_call(name=tool["function"]["name"], args=args, id=f"call_{len(messages)}")]
        elif response_format is not None:
            content = json.dumps(self._json(response_format, prompt))
        elif last_is_tool:
            content = f"The tool answered: {messages[-1].text}"
        else:
            content = self.replies.get(prompt, self.default_reply)
        for sequence in stop or self.stop or []:
            if sequence and sequence in content:
                content = content[: content.index(sequence)]
        words_in = sum(len(str(m.text).split()) for m in messages)
        words_out = len(content.split()) + sum(len(json.dumps(c["args"]).split()) for c in calls)
        usage = UsageMetadata(input_tokens=words_in, output_tokens=words_out, total_tokens=words_in + words_out)
        metadata["finish_reason"] = "tool_calls" if calls else "stop"
        return AIMessage(content=content, tool_calls=calls, usage_metadata=usage, response_metadata=metadata)

    @staticmethod
    def _pick(tools: list[dict[str, Any]], choice: Any, prompt: str) -> dict[str, Any]:
        by_name = {t["function"]["name"]: t for t in tools}
        if isinstance(choice, str) and choice in by_name:
            return by_name[choice]
        words = set(re.findall(r"\w+", prompt.lower()))
        for name, tool in by_name.items():
            if name.lower() in prompt.lower() or set(name.lower().split("_")) & words:
                return tool
        return tools[0]

    def _arguments(self, parameters: dict[str, Any], prompt: str) -> dict[str, Any]:
        numbers = iter(_NUMBER.findall(prompt))
        quoted = iter(a or b for a, b in _QUOTED.findall(prompt))
        properties: dict[str, Any] = parameters.get("properties") or {}
        required = set(parameters.get("required") or properties)
        args: dict[str, Any] = {}
        for name, spec in properties.items():
            if name not in required and name not in self.field_values:
                continue
            kind = spec.get("type") or next((a.get("type") for a in spec.get("anyOf", []) if a.get("type")), "string")
            if kind in ("integer", "number"):
                found = next(numbers, "0")
                args[name] = int(float(found)) if kind == "integer" else float(found)
            elif kind == "boolean":
                args[name] = False
            elif kind == "array":
                args[name] = []
            elif kind == "object":
                args[name] = {}
            else:
                args[name] = self.field_values.get(name) or next(quoted, None) or prompt
        return args

    def _json(self, response_format: dict[str, Any], prompt: str) -> dict[str, Any]:
        if response_format.get("type") == "json_schema":
            return self._arguments(response_format["json_schema"]["schema"], prompt)
        keys = [a or b for a, b in _QUOTED.findall(prompt)]  # JSON mode: the keys the prompt asks for
        return {key: self.field_values.get(key, key) for key in keys}


def _pieces(answer: AIMessage) -> Iterator[AIMessageChunk]:
    """An answer as a provider streams it: words, tool-call chunks, then usage and finish reason, last."""
    text = answer.content if isinstance(answer.content, str) else ""
    words = re.findall(r"\S+\s*", text)
    for word in words:
        yield AIMessageChunk(content=word)
    yield from tool_call_pieces(answer)
    yield AIMessageChunk(
        content="", usage_metadata=answer.usage_metadata, response_metadata=answer.response_metadata,
        chunk_position="last",
    )  # fmt: skip


def tool_call_pieces(answer: AIMessage) -> Iterator[AIMessageChunk]:
    """An answer's tool calls as providers stream them: name and id first, the JSON arguments in two halves."""
    for index, call in enumerate(answer.tool_calls):
        args = json.dumps(call["args"])
        half = len(args) // 2
        yield AIMessageChunk(content="", tool_call_chunks=[tool_call_chunk(name=call["name"], args=args[:half],
                                                                          id=call["id"], index=index)])  # fmt: skip
        yield AIMessageChunk(content="", tool_call_chunks=[tool_call_chunk(args=args[half:], index=index)])
