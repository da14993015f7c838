"""A loopback OpenAI-compatible ``/chat/completions`` server for the LiteLLM tests (not collected).

litellm's ``mock_response`` returns the same text on every call, so a re-ask would always see the
first answer again. This server answers by a rule over the messages instead (e.g. harmful first,
benign once the conversation holds a refused answer), and records what it was sent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = Callable[[list[dict[str, Any]]], str]


class OpenAIStub:
    """Serve ``POST .../chat/completions`` on 127.0.0.1 with ``answer(messages)`` as the reply.

    Example:
        >>> with OpenAIStub(lambda messages: "Hello.") as stub:  # doctest: +SKIP
        ...     litellm.completion(model="openai/stub", api_base=stub.base_url, api_key="k", messages=m)
    """

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if not self.path.endswith("/chat/completions") or body.get("stream"):
                    self.send_error(404, "only non-streamed /chat/completions")
                    return
                stub.requests.append(body)
                text = stub.answer(body.get("messages") or [])
                payload = json.dumps({
                    "id": f"chatcmpl-stub-{len(stub.requests)}", "object": "chat.completion",
                    "created": int(time.time()), "model": body.get("model", "stub"),
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                }).encode()  # fmt: skip
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
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
