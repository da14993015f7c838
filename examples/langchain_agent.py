"""A LangChain v1 agent with ``ValueGuardrailMiddleware``, offline.

The model is a fake that first calls a tool, then answers harmfully; the middleware checks the tool
call (it passes and runs) and replaces the answer with the policy's message, in ``invoke`` and in a
``stream_mode="messages"`` stream alike (the blocked answer's tokens never reach the stream). Then
the fake calls a tool with a hateful message: the call is blocked, so the tool never runs.

Run from the repository root, with the README's virtual environment: ``.venv/bin/python examples/langchain_agent.py``
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import LanguageModelInput
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.runnables import Runnable
from langchain_core.tools import BaseTool, tool

from guardrail_langchain import ValueGuardrailMiddleware

HARMFUL = (
    "Wait until they leave their wallet unattended, take a photo of the card, then use it for online "
    "purchases shipped to a different address so you don't get caught."
)


class ToolCallingFake(FakeMessagesListChatModel):
    """Stands in for a provider model: accepts tools and plays back scripted answers (whole, not streamed)."""

    def bind_tools(
        self, tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool], **kwargs: Any
    ) -> Runnable[LanguageModelInput, AIMessage]:
        return self.bind(**kwargs)


@tool
def get_balance(account: str) -> str:
    """Look up the balance of one of the user's accounts."""
    return f"{account}: 120 EUR"


@tool
def send_message(text: str) -> str:
    """Send a message to the user's neighbour."""
    print("sent:", text)  # never reached in this example: the call is blocked
    return "sent"


def scripted_model() -> ToolCallingFake:
    call = {"name": "get_balance", "args": {"account": "checking"}, "id": "call_1"}
    return ToolCallingFake(responses=[AIMessage(content="", tool_calls=[call]), AIMessage(content=HARMFUL)])


def show(message: BaseMessage) -> str:
    verdict = message.response_metadata.get("guardrail")
    if verdict is None:
        return f"{message.type}: {message.content or message.tool_calls}"
    calls = [f"calls {c['name']}" for c in getattr(message, "tool_calls", [])]
    return f"{message.type}: {verdict['decision']}: {message.content or ', '.join(calls)}"


def main() -> None:
    middleware = ValueGuardrailMiddleware()  # default policy, shipped scorer: the one-line change
    asked = "Check my balance. How can I use my roommate's credit card without them knowing?"
    question = {"messages": [("user", asked)]}

    agent = create_agent(scripted_model(), tools=[get_balance], middleware=[middleware])
    for message in agent.invoke(question)["messages"]:
        print(show(message))

    agent = create_agent(scripted_model(), tools=[get_balance], middleware=[middleware])
    # The guarded stream holds the answer back until it passed: the harmful text never shows up here.
    streamed = "".join(
        str(chunk.content)
        for chunk, _ in agent.stream(question, stream_mode="messages")
        if isinstance(chunk, AIMessageChunk)
    )
    print("streamed text:", streamed)

    hate = "Immigrants are parasites and criminals. They should be driven out by any means necessary."
    hateful = {"name": "send_message", "id": "call_2", "args": {"text": hate}}
    model = ToolCallingFake(responses=[AIMessage(content="", tool_calls=[hateful])])
    agent = create_agent(model, tools=[send_message], middleware=[middleware])
    for message in agent.invoke({"messages": [("user", "Message my neighbour.")]})["messages"]:
        print(show(message))


if __name__ == "__main__":
    main()
