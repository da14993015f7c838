"""Guarded event streams of the proxy's Responses API (``/v1/responses``) and Anthropic (``/v1/messages``) routes.

Their events repeat the answer's text (deltas, then ``*.done`` events, then the whole response in
the final event), so a stream is held back whole: every event waits until the assembled answer is
checked like a non-streamed one (:mod:`guardrail_litellm._parts`). An answer that passes goes out
as it came; an altered one is replayed from the delivered answer as a well-formed stream of its own:
the Responses API's ``response.completed`` event last, Anthropic's ``message_delta`` and
``message_stop``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from guardrail import Guard, Output, Verdict, deciding
from guardrail_litellm._parts import (
    anthropic_outputs,
    choices_of,
    deliver_anthropic,
    deliver_responses,
    field,
    responses_outputs,
)

_FINAL = ("response.completed", "response.incomplete", "response.failed")
_LIFECYCLE = ("response.created", "response.in_progress", "response.queued")


def event_type(event: object) -> str:
    """An event's ``type`` as text (litellm's are str enums)."""
    kind = field(event, "type")
    return str(getattr(kind, "value", kind) or "")


def is_responses_event(chunk: object) -> bool:
    """Whether a streamed chunk is a Responses API event."""
    return event_type(chunk).startswith("response.")


def sse(name: str, **data: Any) -> bytes:
    """One server-sent event frame, its data's ``type`` the event's name."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **data}, ensure_ascii=False)}\n\n".encode()


def _json(obj: object) -> dict[str, Any]:
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json", exclude_none=True) if dump is not None else copy.deepcopy(dict(obj))  # type: ignore[call-overload]


class _Held:
    """A stream held whole, checked once it ended, then released or replayed (``verdict`` like a guarded stream)."""

    def __init__(self, guard: Guard, upstream: AsyncIterable[Any], prompt: str | None,
                 metadata: Mapping[str, Any] | None) -> None:  # fmt: skip
        self._guard, self._upstream, self._prompt, self._metadata = guard, upstream, prompt, metadata
        self.verdicts: list[Verdict] = []
        self._gen = self._run()

    @property
    def verdict(self) -> Verdict | None:
        """The deciding verdict once the answer is checked (``None`` before, and for an empty answer)."""
        return deciding(self.verdicts) if self.verdicts else None

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    def __anext__(self) -> Any:
        return self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop early (the client went away): closes the model call."""
        await self._gen.aclose()

    async def _run(self) -> AsyncIterator[Any]:
        try:
            held = [event async for event in self._upstream]
            answer, pieces = self._assemble(held)
            if pieces:
                self.verdicts = await self._guard.aenforce_outputs(pieces, self._prompt, self._metadata)
            outcome = choices_of(self.verdicts).get(0)
            out = self._replay(held, answer) if outcome is not None and outcome.altered else held
            for event in out:
                yield event
        finally:
            close = getattr(self._upstream, "aclose", None)
            if close is not None:
                await close()

    def _assemble(self, held: list[Any]) -> tuple[Any, list[Output]]:
        raise NotImplementedError

    def _replay(self, held: list[Any], answer: Any) -> list[Any]:
        raise NotImplementedError


class ResponsesEvents(_Held):
    """A Responses API event stream, held whole until checked (see module docs)."""

    def _assemble(self, held: list[Any]) -> tuple[dict[str, Any], list[Output]]:
        final = next((field(e, "response") for e in reversed(held) if event_type(e) in _FINAL), None)
        if final is not None:
            answer = _json(final)
        else:  # cut short: the items that were completed, else the text deltas, are what the client got
            items = [_json(field(e, "item")) for e in held if event_type(e) == "response.output_item.done"]
            text = "".join(field(e, "delta") or "" for e in held if event_type(e) == "response.output_text.delta")
            answer = {"output": items or [{"type": "message", "content": [{"type": "output_text", "text": text}]}]}
        return answer, responses_outputs(answer)

    def _replay(self, held: list[Any], answer: dict[str, Any]) -> list[Any]:
        deliver_responses(answer, self.verdicts)
        head = [e for e in held if event_type(e) in _LIFECYCLE]
        frames: list[Any] = list(head)
        number = len(head)

        def emit(name: str, **data: Any) -> None:
            nonlocal number
            frames.append(sse(name, sequence_number=number, **data))
            number += 1

        for n, item in enumerate(answer.get("output") or []):
            emit("response.output_item.added", output_index=n, item={**item, "status": "in_progress",
                 **({"content": []} if item.get("type") == "message" else {})})  # fmt: skip
            for c, part in enumerate(item.get("content") or [] if item.get("type") == "message" else []):
                ids = {"item_id": item.get("id"), "output_index": n, "content_index": c}
                emit("response.content_part.added", **ids, part={**part, "text": ""})
                emit("response.output_text.delta", **ids, delta=part.get("text", ""), logprobs=[])
                emit("response.output_text.done", **ids, text=part.get("text", ""), logprobs=[])
                emit("response.content_part.done", **ids, part=part)
            emit("response.output_item.done", output_index=n, item=item)
        emit("response.completed", response={**answer, "status": "completed"})
        return frames


class AnthropicEvents(_Held):
    """An Anthropic messages event stream (server-sent event bytes), held whole until checked."""

    def _assemble(self, held: list[Any]) -> tuple[dict[str, Any], list[Output]]:
        message: dict[str, Any] = {"id": "msg_guardrail", "type": "message", "role": "assistant", "content": []}
        blocks: dict[int, dict[str, Any]] = {}
        arguments: dict[int, str] = {}
        for name, data in _frames(held):
            if name == "message_start":
                message = {**data.get("message", {}), "content": []}
            elif name == "content_block_start":
                blocks[data.get("index", 0)] = dict(data.get("content_block") or {})
            elif name == "content_block_delta":
                index, delta = data.get("index", 0), data.get("delta") or {}
                block = blocks.setdefault(index, {"type": "text", "text": ""})
                for key in ("text", "thinking", "signature"):
                    if key in delta:
                        block[key] = (block.get(key) or "") + delta[key]
                if "partial_json" in delta:
                    arguments[index] = arguments.get(index, "") + delta["partial_json"]
            elif name == "message_delta":
                message.update({k: v for k, v in (data.get("delta") or {}).items() if v is not None})
                message["usage"] = {**(message.get("usage") or {}), **(data.get("usage") or {})}
        for index, text in arguments.items():
            try:
                blocks[index]["input"] = json.loads(text) if text else {}
            except ValueError:
                blocks[index]["input"] = text  # checked as it came
        message["content"] = [blocks[i] for i in sorted(blocks)]
        return message, anthropic_outputs(message)

    def _replay(self, held: list[Any], answer: dict[str, Any]) -> list[Any]:
        deliver_anthropic(answer, self.verdicts)
        usage = answer.get("usage") or {}
        frames = [sse("message_start", message={**answer, "content": [], "stop_reason": None})]
        for n, block in enumerate(answer.get("content") or []):
            start, deltas = _block_events(block)
            frames.append(sse("content_block_start", index=n, content_block=start))
            frames += [sse("content_block_delta", index=n, delta=d) for d in deltas]
            frames.append(sse("content_block_stop", index=n))
        stop = {"stop_reason": answer.get("stop_reason") or "end_turn", "stop_sequence": answer.get("stop_sequence")}
        frames.append(sse("message_delta", delta=stop, usage={"output_tokens": usage.get("output_tokens", 0)}))
        frames.append(sse("message_stop"))
        return frames


def _block_events(block: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A content block as its start event's block and its deltas."""
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": ""}, [{"type": "text_delta", "text": block.get("text", "")}]
    if kind == "thinking":
        return {"type": "thinking", "thinking": "", "signature": ""}, [
            {"type": "thinking_delta", "thinking": block.get("thinking", "")},
            {"type": "signature_delta", "signature": block.get("signature", "")},
        ]
    return {**block, "input": {}}, [{"type": "input_json_delta", "partial_json": json.dumps(block.get("input", {}))}]


def _frames(held: list[Any]) -> list[tuple[str, dict[str, Any]]]:
    """The ``(event, data)`` pairs of server-sent event chunks (bytes or text, frames split anyhow)."""
    text = "".join(c.decode("utf-8", errors="replace") if isinstance(c, bytes) else str(c) for c in held)
    out = []
    for frame in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "", []
        for line in frame.split("\n"):
            if line.startswith("event:"):
                name = line[len("event:") :].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:") :].strip())
        try:
            payload = json.loads("\n".join(data)) if data else None
        except ValueError:
            continue
        if isinstance(payload, dict):
            out.append((name or str(payload.get("type", "")), payload))
    return out
