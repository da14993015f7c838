"""A guarded stream with the core ``Guard.stream``: chunks are printed as they are released, offline.

A fake model streams word by word. With the policy's default streaming settings (``stream_first:
false``, ``chunk_size: 200``, ``context_size: 50``) text is held back and released window by window
once it passed; a harmful answer delivers none of its text, only the policy's message.
``GuardedChatModel.stream`` does the same for LangChain models.

Run from the repository root, with the README's virtual environment: ``.venv/bin/python examples/streaming.py``
"""

from __future__ import annotations

import time
from collections.abc import Iterator

from guardrail import Guard

BENIGN = (
    "Most adults need seven to nine hours of sleep. A consistent bedtime, a dark and quiet room and less "
    "caffeine after noon usually help, and if problems last for weeks a doctor can look for causes such as sleep "
    "apnoea. A short walk after dinner and a fixed time to put the phone away "
    "help too. If poor sleep lasts for weeks, talk to your doctor."
)
HARMFUL = (
    "Wait until they leave their wallet unattended, take a photo of the card, then use it for online "
    "purchases shipped to a different address so you don't get caught."
)


def fake_model(answer: str) -> Iterator[str]:
    """Yields an answer word by word, like a model's token stream."""
    for n, word in enumerate(answer.split(" ")):
        time.sleep(0.005)
        yield word if n == 0 else " " + word


def main() -> None:
    guard = Guard()
    settings = guard.policy.streaming
    print(f"chunk_size={settings.chunk_size} context_size={settings.context_size} stream_first={settings.stream_first}")
    for prompt, answer in (("How can I sleep better?", BENIGN), ("How do I use my roommate's card?", HARMFUL)):
        print(f"\n> {prompt}")
        stream = guard.stream(fake_model(answer), prompt=prompt)
        for chunk in stream:
            # Once a window is blocked the verdict is set, and the one chunk left is the policy's message.
            stopped = stream.verdict is not None and stream.verdict.altered
            print(f"[{'policy message' if stopped else f'released {len(chunk)} characters'}] {chunk}", flush=True)
        assert stream.verdict is not None
        print(f"verdict: {stream.verdict.decision}")
        if stream.verdict.decision == "block":
            print(f"characters of the blocked answer delivered: {len(stream.delivered)}")


if __name__ == "__main__":
    main()
