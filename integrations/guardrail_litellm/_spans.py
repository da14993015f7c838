"""What a guarded call's model-call span records, read from litellm's arguments, responses and chunks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import litellm

from guardrail import ModelCall, ModelReply
from guardrail_litellm._mapping import answer_of, chunk_text, text_of_content

# litellm's argument names for what the conventions call gen_ai.request.<name>.
_PARAMETERS = {
    "temperature": ("temperature",),
    "max_tokens": ("max_tokens", "max_completion_tokens"),
    "top_p": ("top_p",),
    "top_k": ("top_k",),
    "frequency_penalty": ("frequency_penalty",),
    "presence_penalty": ("presence_penalty",),
    "seed": ("seed",),
    "stop_sequences": ("stop",),
}


def model_call(kwargs: Mapping[str, Any], provider: str | None = None, *, resolve: bool = True) -> ModelCall:
    """The call ``litellm.completion(**kwargs)`` makes: the provider's model name, the provider, the parameters.

    Args:
        kwargs: litellm's arguments by name.
        provider: The provider when already known (the proxy reads it off the response).
        resolve: Ask litellm which provider serves the model (not for the proxy's model aliases, which
            litellm cannot place, and says so on stdout).
    """
    model = kwargs.get("model")
    name = model if isinstance(model, str) else None
    if name is not None and provider is None and resolve:
        try:
            # "openai/stub" -> ("stub", "openai"); "gpt-4o-mini" -> ("gpt-4o-mini", "openai")
            name, provider, _, _ = litellm.get_llm_provider(
                model=name, custom_llm_provider=kwargs.get("custom_llm_provider"), api_base=kwargs.get("api_base")
            )
        except Exception:  # litellm cannot place the model (a proxy alias...): keep the name as given
            provider = kwargs.get("custom_llm_provider") or None
    parameters: dict[str, Any] = {}
    for conventional, names in _PARAMETERS.items():
        value = next((kwargs[n] for n in names if kwargs.get(n) is not None), None)
        if value is not None:
            parameters[conventional] = [value] if conventional == "stop_sequences" and isinstance(value, str) else value
    messages = kwargs.get("messages")
    return ModelCall(name, provider, parameters, lambda: _messages(messages))


def reply_of(response: Any) -> ModelReply:
    """What a (non-streamed) ``ModelResponse`` says about the call."""
    usage = getattr(response, "usage", None)
    choices = getattr(response, "choices", None) or []
    return ModelReply(
        model=_text(getattr(response, "model", None)),
        id=_text(getattr(response, "id", None)),
        finish_reasons=[c.finish_reason for c in choices if isinstance(getattr(c, "finish_reason", None), str)],
        input_tokens=_count(getattr(usage, "prompt_tokens", None)),
        output_tokens=_count(getattr(usage, "completion_tokens", None)),
        text=answer_of(response),
    )


def stream_reply(chunks: Sequence[Any]) -> ModelReply:
    """What a streamed answer's chunks say about the call (usage comes in the last chunk, when asked for)."""
    usage = next((u for c in reversed(chunks) if (u := getattr(c, "usage", None)) is not None), None)
    finish = [
        reason
        for c in chunks
        for choice in (getattr(c, "choices", None) or [])[:1]
        if isinstance(reason := getattr(choice, "finish_reason", None), str)
    ]
    return ModelReply(
        model=next((m for c in chunks if (m := _text(getattr(c, "model", None)))), None),
        id=next((i for c in chunks if (i := _text(getattr(c, "id", None)))), None),
        finish_reasons=finish,
        input_tokens=_count(getattr(usage, "prompt_tokens", None)),
        output_tokens=_count(getattr(usage, "completion_tokens", None)),
        text="".join(chunk_text(c) or "" for c in chunks),
    )


def _messages(messages: object) -> list[tuple[str, str]]:
    out = []
    for message in messages if isinstance(messages, Sequence) and not isinstance(messages, str) else []:
        if isinstance(message, Mapping):
            role, content = message.get("role"), message.get("content")
        else:  # litellm Message objects
            role, content = getattr(message, "role", None), getattr(message, "content", None)
        out.append((str(role), text_of_content(content) or ""))
    return out


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
