"""The guarded LiteLLM calls the LiteLLM and span tests share: one request, sync or async, plain or streamed."""

from __future__ import annotations

import asyncio
from typing import Any

from guardrail_litellm import acompletion, completion

PROMPT = "How can I sleep better?"
MESSAGES = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": PROMPT}]
MODEL = "gpt-4o-mini"  # never called: every answer is a mock_response or comes from the loopback server


def call(use_async: bool, **kwargs: Any) -> Any:
    """completion(...) or acompletion(...) with the same arguments."""
    kwargs = {"model": MODEL, "messages": MESSAGES, **kwargs}
    return asyncio.run(acompletion(**kwargs)) if use_async else completion(**kwargs)


def stream_chunks(use_async: bool, **kwargs: Any) -> tuple[list[Any], Any]:
    """The chunks of a guarded stream (sync or async) and the stream itself, iterated to the end."""
    kwargs = {"model": MODEL, "messages": MESSAGES, "stream": True, **kwargs}
    if not use_async:
        stream = completion(**kwargs)
        return list(stream), stream

    async def run() -> tuple[list[Any], Any]:
        stream = await acompletion(**kwargs)
        return [chunk async for chunk in stream], stream

    return asyncio.run(run())
