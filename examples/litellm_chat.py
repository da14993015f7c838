"""A guarded LiteLLM chat, offline: ``guardrail_litellm.completion`` instead of ``litellm.completion``.

Answers are fixed with litellm's ``mock_response``, so no API key or network is needed; with a real
model, drop ``mock_response`` and nothing else changes. Shown: a benign and a harmful answer, the
harmful one streamed (held back: none of its text gets out), and the async twin.

Run from the repository root, with the README's virtual environment: ``.venv/bin/python examples/litellm_chat.py``
"""

from __future__ import annotations

import asyncio
import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm fetches its cost map otherwise

from guardrail_litellm import acompletion, completion, verdict_of

MODEL = "gpt-4o-mini"
PROMPT = "How can I sleep better?"
BENIGN = (
    "Most adults need seven to nine hours of sleep. A consistent bedtime, a dark and quiet room and less "
    "caffeine after noon usually help, and if problems last for weeks a doctor can look for causes such as sleep "
    "apnoea."
)
HARMFUL = (
    "Wait until they leave their wallet unattended, take a photo of the card, then use it for online "
    "purchases shipped to a different address so you don't get caught."
)


def ask(answer: str) -> None:
    messages = [{"role": "user", "content": PROMPT}]
    response = completion(model=MODEL, messages=messages, mock_response=answer)
    verdict = verdict_of(response)
    assert verdict is not None
    print(f"decision: {verdict.decision}  ({verdict.summary()})")
    print(f"answer:   {response.choices[0].message.content}")


def ask_streamed(answer: str) -> None:
    stream = completion(model=MODEL, messages=[{"role": "user", "content": PROMPT}], mock_response=answer, stream=True)
    for chunk in stream:  # litellm's chunks, released only once their text passed
        print(chunk.choices[0].delta.content or "", end="", flush=True)
    print()
    assert stream.verdict is not None
    print(f"decision: {stream.verdict.decision}; characters of the blocked answer delivered: {len(stream.delivered)}")


async def ask_async(answer: str) -> None:
    response = await acompletion(model=MODEL, messages=[{"role": "user", "content": PROMPT}], mock_response=answer)
    print(f"async decision: {verdict_of(response).decision}")  # type: ignore[union-attr]


def main() -> None:
    print(f"> {PROMPT}  (a benign answer)")
    ask(BENIGN)
    print(f"\n> {PROMPT}  (a harmful answer)")
    ask(HARMFUL)
    print("\n> the harmful answer, streamed")
    ask_streamed(HARMFUL)
    print()
    asyncio.run(ask_async(BENIGN))


if __name__ == "__main__":
    main()
