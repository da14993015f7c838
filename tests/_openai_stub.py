"""A loopback OpenAI-compatible ``/chat/completions`` server for the LiteLLM tests (not collected).

litellm's ``mock_response`` returns the same text on every call, carries one choice and cannot
stream reasoning or tool calls. This server answers by a rule over the messages instead (e.g.
harmful first, benign once the conversation holds a refused answer), with any number of choices,
each with content, ``reasoning_content`` and tool calls, streamed (SSE) or not, and records what
it was sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One choice of an answer: its content, its reasoning trace and its tool calls ``(name, arguments)``."""

    content: str | None = None
    reasoning: str | None = None
    tool_calls: tuple[tuple[str, str], ...] = ()


Answer = Callable[[list[dict[str, Any]]], "str | Reply | Sequence[Reply]"]
"""The reply to a conversation: a text, one choice, or one :class:`Reply` per choice."""


def choices_of(answer: str | Reply | Sequence[Reply]) -> list[Reply]:
    if isinstance(answer, str):
        return [Reply(content=answer)]
    return [answer] if isinstance(answer, Reply) else list(answer)


def _message(n: int, reply: Reply) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": reply.content}
    if reply.reasoning is not None:
        message["reasoning_content"] = reply.reasoning
    if reply.tool_calls:
        message["tool_calls"] = [
            {"id": f"call_{n}_{i}", "type": "function", "function": {"name": name, "arguments": args}}
            for i, (name, args) in enumerate(reply.tool_calls)
        ]
    return message


def _finish(reply: Reply) -> str:
    return "tool_calls" if reply.tool_calls else "stop"


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _deltas(n: int, reply: Reply, size: int) -> Iterator[tuple[dict[str, Any], str | None]]:
    """The ``(delta, finish_reason)`` pairs a streamed choice is sent as, in the order providers send them."""
    yield {"role": "assistant", "content": ""}, None
    for piece in _pieces(reply.reasoning or "", size):
        yield {"reasoning_content": piece}, None
    for piece in _pieces(reply.content or "", size):
        yield {"content": piece}, None
    for i, (name, args) in enumerate(reply.tool_calls):
        head = {"index": i, "id": f"call_{n}_{i}", "type": "function", "function": {"name": name, "arguments": ""}}
        yield {"tool_calls": [head]}, None
        for piece in _pieces(args, size):
            yield {"tool_calls": [{"index": i, "function": {"arguments": piece}}]}, None
    yield {}, _finish(reply)


class OpenAIStub:
    """Serve ``POST .../chat/completions`` on 127.0.0.1 with ``answer(messages)`` as the reply.

    Args:
        answer: The reply to each request's messages.
        piece: Characters per streamed delta.
        pace: Seconds between streamed chunks (a slow model, for clients that leave early).

    Example:
        >>> with OpenAIStub(lambda messages: "Hello.") as stub:  # doctest: +SKIP
        ...     litellm.completion(model="openai/stub", api_base=stub.base_url, api_key="k", messages=m)
    """

    def __init__(self, answer: Answer, *, piece: int = 8, pace: float = 0.0) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self.send_error(404, "only /chat/completions")
                    return
                stub.requests.append(body)
                replies = choices_of(stub.answer(body.get("messages") or []))
                head = {"id": f"chatcmpl-stub-{len(stub.requests)}", "created": int(time.time()),
                        "model": body.get("model", "stub")}  # fmt: skip
                usage = {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}
                if body.get("stream"):
                    self._stream(head, replies, usage, bool((body.get("stream_options") or {}).get("include_usage")))
                    return
                payload = json.dumps({
                    **head, "object": "chat.completion", "usage": usage,
                    "choices": [{"index": n, "message": _message(n, r), "finish_reason": _finish(r)}
                                for n, r in enumerate(replies)],
                }).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _stream(
                self, head: dict[str, Any], replies: list[Reply], usage: dict[str, int], with_usage: bool
            ) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                events = [{**head, "object": "chat.completion.chunk",
                           "choices": [{"index": n, "delta": delta, "finish_reason": finish}]}
                          for n, reply in enumerate(replies) for delta, finish in _deltas(n, reply, piece)]  # fmt: skip
                if with_usage:
                    events.append({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage})
                try:
                    for event in events:
                        self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
                        self.wfile.flush()
                        if pace:
                            time.sleep(pace)
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):  # the caller stopped reading: fine
                    pass

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="openai-stub", daemon=True)

    @property
    def base_url(self) -> str:
        """The ``api_base`` to give litellm (``http://127.0.0.1:PORT/v1``)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> OpenAIStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
