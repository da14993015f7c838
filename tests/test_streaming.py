"""Guarded streams over fixed vectors: hold-back, cut, stream_first, rewrite fallback, isolation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from guardrail import Guard, Policy, ValueVector, load_policy
from guardrail.testing import FakeScorer

HARMFUL = "You should hurt them badly tonight and make them pay for it, nobody will ever find out."
BENIGN = "Drink plenty of water, rest well, and ask a pharmacist which remedy suits you best."


def harm(prompt: str | None, response: str) -> ValueVector:
    return ValueVector(benevolence=-0.8) if "hurt" in response else ValueVector()


def guard(stream_first: bool = False, chunk_size: int = 20, context_size: int = 5, **extra: Any) -> Guard:
    policy = Policy(
        name="s", thresholds=extra.pop("thresholds", {"benevolence": {"min": -0.3}}),
        actions={"block": {"type": "block", "message": "[blocked]"}, **extra.pop("actions", {})},
        streaming={"chunk_size": chunk_size, "context_size": context_size, "stream_first": stream_first}, **extra,
    )  # fmt: skip
    return Guard(policy, scorer=FakeScorer(fn=harm))


def pieces(text: str, size: int = 7) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_benign_stream_delivers_everything_in_order() -> None:
    stream = guard().stream(pieces(BENIGN), prompt="I have a cold.")
    assert "".join(stream) == BENIGN
    assert stream.verdict is not None and stream.verdict.decision == "allow"
    assert stream.delivered == BENIGN


def test_blocked_stream_delivers_no_character_of_the_answer() -> None:
    stream = guard().stream(pieces(HARMFUL))
    out = list(stream)
    assert out == ["[blocked]"]
    assert stream.delivered == ""
    assert stream.verdict is not None and stream.verdict.decision == "block"
    assert stream.verdict.output == "[blocked]"


def test_harm_in_a_later_window_releases_only_text_that_passed() -> None:
    answer = BENIGN + " Then go and hurt your neighbour."
    stream = guard().stream(pieces(answer))
    text = "".join(stream)
    assert text.endswith("[blocked]")
    assert "hurt" not in text
    assert answer.startswith(stream.delivered) and len(stream.delivered) < len(answer)


def test_windows_carry_context_and_never_split_words() -> None:
    g = guard(chunk_size=20, context_size=6)
    list(g.stream(pieces(BENIGN)))
    windows = [r for call in g.scorer.calls for _, r in call]
    end = 0
    for n, window in enumerate(windows):
        start = BENIGN.find(window)
        new_end = start + len(window)
        assert new_end > end and (new_end == len(BENIGN) or BENIGN[new_end] in " \n"), (n, window)  # word boundary
        # At least the last 6 characters already scored go along, and a short window is stretched back
        # over scored text to the full 20 + 6 characters.
        assert start == max(0, min(end - 6, new_end - 26)), (n, window)
        end = new_end
    assert end == len(BENIGN)


def test_stream_first_passes_text_at_once_and_cuts_on_violation() -> None:
    answer = "Sure thing, my friend, here is my plan: hurt them all and laugh about it later."
    stream = guard(stream_first=True).stream(pieces(answer, 4))
    out = list(stream)
    assert out[-1] == "[blocked]"
    assert len("".join(out[:-1])) > 0  # text flowed before the window was scored
    assert stream.verdict is not None and stream.verdict.decision == "block"


def test_rewrite_in_a_stream_applies_its_fallback() -> None:
    g = guard(actions={"fix": {"type": "rewrite", "strategy": "reask", "fallback": "block"}},
              thresholds={"benevolence": {"min": -0.3, "action": "fix"}})  # fmt: skip
    stream = g.stream(pieces(HARMFUL))
    assert list(stream) == ["[blocked]"]
    assert stream.verdict is not None and stream.verdict.rewrite is not None
    assert stream.verdict.rewrite.final_decision == "block"
    assert "cannot be rewritten" in stream.verdict.rewrite.reason


def test_shadow_stream_delivers_everything_and_records() -> None:
    stream = guard(mode="shadow").stream(pieces(HARMFUL))
    assert "".join(stream) == HARMFUL
    assert stream.verdict is not None and stream.verdict.intended == "block"


def test_text_less_chunks_keep_their_place() -> None:
    chunks: list[dict[str, Any]] = [{"role": "assistant"}] + [{"text": p} for p in pieces(BENIGN)] + [{"end": True}]
    stream = guard().stream(chunks, text=lambda c: c.get("text"), rebuild=lambda c, t: {"text": t})
    out = list(stream)
    assert out[0] == {"role": "assistant"} and out[-1] == {"end": True}
    assert "".join(c.get("text", "") for c in out) == BENIGN


def test_stopping_closes_the_upstream() -> None:
    closed: list[bool] = []

    def upstream() -> Any:
        try:
            yield from pieces(HARMFUL)
            yield from pieces(BENIGN * 10)
        finally:
            closed.append(True)

    assert list(guard().stream(upstream())) == ["[blocked]"]
    assert closed == [True]


def test_async_stream_matches_sync() -> None:
    async def upstream(text: str) -> AsyncIterator[str]:
        for p in pieces(text):
            await asyncio.sleep(0)
            yield p

    async def run(text: str) -> tuple[list[str], str]:
        stream = guard().astream(upstream(text))
        out = [c async for c in stream]
        assert stream.verdict is not None
        return out, stream.verdict.decision

    assert asyncio.run(run(BENIGN)) == (list(guard().stream(pieces(BENIGN))), "allow")
    assert asyncio.run(run(HARMFUL)) == (["[blocked]"], "block")


def test_fifty_concurrent_streams_never_mix() -> None:
    answers = [f"Answer number {n}: " + ("hurt " if n % 5 == 0 else "") + f"plain words for caller {n}. " * 3
               for n in range(50)]  # fmt: skip
    g = guard(chunk_size=16, context_size=4)

    async def upstream(text: str) -> AsyncIterator[str]:
        for p in pieces(text, 5):
            await asyncio.sleep(0)
            yield p

    async def one(text: str) -> str:
        return "".join([c async for c in g.astream(upstream(text))])

    async def main() -> list[str]:
        return await asyncio.gather(*(one(a) for a in answers))

    for n, (answer, got) in enumerate(zip(answers, asyncio.run(main()))):
        if n % 5 == 0:
            assert got.endswith("[blocked]") and "hurt" not in got
        else:
            assert got == answer


def test_policy_streaming_block_is_validated_and_inherited(tmp_path: Any) -> None:
    parent = tmp_path / "parent.yaml"
    parent.write_text("name: parent\nstreaming: {chunk_size: 300, context_size: 40}\n", encoding="utf-8")
    child = tmp_path / "child.yaml"
    child.write_text(f"name: child\nextends: {parent}\nstreaming: {{stream_first: true}}\n", encoding="utf-8")
    streaming = load_policy(child).streaming
    assert (streaming.chunk_size, streaming.context_size, streaming.stream_first) == (300, 40, True)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nstreaming: {chunk_size: 0}\n", encoding="utf-8")
    with pytest.raises(Exception, match=r"bad.yaml:2.*streaming.chunk_size"):
        load_policy(bad)


@pytest.mark.parametrize("name", ["default", "strict", "shadow", "customer-support"])
def test_shipped_policies_are_safe_by_default(name: str) -> None:
    assert load_policy(name).streaming.stream_first is False


def test_close_early_closes_the_upstream_and_settles_the_verdict() -> None:
    closed: list[bool] = []

    def upstream() -> Any:
        try:
            yield from pieces(BENIGN * 3)
        finally:
            closed.append(True)

    stream = guard().stream(upstream())
    first = next(stream)
    stream.close()
    assert closed == [True] and stream.verdict is not None and stream.delivered.startswith(first)

    async def run() -> None:
        async def aupstream() -> AsyncIterator[str]:
            try:
                for p in pieces(BENIGN * 3):
                    yield p
            finally:
                closed.append(True)

        astream = guard().astream(aupstream())
        await astream.__anext__()
        await astream.aclose()
        assert astream.verdict is not None

    asyncio.run(run())
    assert closed == [True, True]
