"""The host path: windows, padding and scores identical to the ``transformers`` tokenizer's windowing."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail import ScorerError, TransformerScorer
from guardrail._scoring.windows import Window, Windower, pad
from guardrail._types import Item
from guardrail._validate import clean_text


def reference_windows(scorer: TransformerScorer, items: list[Item]) -> tuple[list[dict[str, list[int]]], list[int]]:
    """The windowing the scorer is trained and checked against: the ``transformers`` call with
    overflowing tokens, the prompt clipped to its first ``prompt_tokens`` tokens and decoded."""
    tokenizer, config = scorer._tokenizer, scorer.config

    def clip(prompt: str) -> str:
        prompt = prompt[: config.prompt_tokens * 100]
        ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return prompt if len(ids) <= config.prompt_tokens else tokenizer.decode(ids[: config.prompt_tokens])

    windows, owners = [], []
    for paired in (True, False):
        group = [n for n, (prompt, _) in enumerate(items) if bool(prompt) == paired]
        if not group:
            continue
        responses = [clean_text(items[n][1]) for n in group]
        prompts = [clip(clean_text(items[n][0] or "")) for n in group] if paired else None
        enc = tokenizer(
            *([prompts, responses] if paired else [responses]),
            truncation="only_second" if paired else True,
            max_length=config.max_length,
            stride=min(config.window_overlap, config.max_length // 2),
            return_overflowing_tokens=True,
        )
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        for i, owner in enumerate(enc["overflow_to_sample_mapping"]):
            windows.append({k: enc[k][i] for k in keys})
            owners.append(group[owner])
    return windows, owners


def assert_same_windows(scorer: TransformerScorer, items: list[Item]) -> list[Window]:
    want, want_owners = reference_windows(scorer, items)
    got, owners = scorer._windows(items)
    assert owners == want_owners
    assert [w.ids for w in got] == [w["input_ids"] for w in want]
    padded = pad(got, scorer._windower.pad_id)
    reference = scorer._tokenizer.pad(want, return_tensors="np")
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert np.array_equal(padded[key], reference[key]), key
    return got


@pytest.fixture(scope="module")
def recorded(data_dir: Path) -> list[Item]:
    """Real LLM answers with their prompts (a fixed sample of every harm source), and alone."""
    rows = []
    for file in sorted((data_dir / "harm").glob("*.jsonl")):
        lines = file.read_text(encoding="utf-8").splitlines()
        rows += [json.loads(line) for line in random.Random(file.name).sample(lines, min(len(lines), 600))]
    items: list[Item] = [(r["prompt"], r["response"]) for r in rows]
    return items + [(None, response) for _, response in items[::3]]


def test_windows_match_the_tokenizer_on_recorded_answers(scorer: TransformerScorer, recorded: list[Item]) -> None:
    windows = assert_same_windows(scorer, recorded)
    assert any(not item[1].isascii() for item in recorded)  # both paths of the windower ran
    assert len(windows) > len(recorded)  # and some answers needed several windows


EDGES: list[Item] = [
    ("", "x"),
    ("  ", ""),
    (None, ""),
    ("[SEP] a prompt [cls]", "an answer that writes [CLS] and [sep] and [MASK]"),
    ("p", "word " * 700),
    ("q" * 9000, "long " * 2000),
    ("café", "naïve résumé 日本語 😀 " * 60),
    ("tabs\tand\nnewlines\r", "control\x0bchars\x0c and\x00nul and \x7f"),
    ("a " * 80, "x" * 300 + " supercalifragilisticexpialidocious_under_score 12,345.67"),
    ("lone \ud800 surrogate", "answer \udfff"),
    ("ÀÉ İstanbul", "\u200b ß ﬁne 日本語テキスト Ǆ ΣΑΣ x\u0301 \u0301start \u2028 \u3000 x\xa0y \x85 z\x1cw"),
]


def test_windows_match_the_tokenizer_on_edge_cases(scorer: TransformerScorer) -> None:
    assert_same_windows(scorer, EDGES)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.none() | st.text(st.characters(codec="ascii"), max_size=200) | st.text(max_size=80),
            st.text(st.characters(codec="ascii"), max_size=1500) | st.text(max_size=300),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_windows_match_the_tokenizer_on_any_text(scorer: TransformerScorer, items: list[Item]) -> None:
    assert_same_windows(scorer, items)


def test_scores_are_those_of_the_tokenizer_windows(scorer: TransformerScorer, recorded: list[Item]) -> None:
    import torch

    items = recorded[:40] + EDGES
    want, _ = reference_windows(scorer, items)
    batch = {k: torch.from_numpy(v) for k, v in scorer._tokenizer.pad(want, return_tensors="np").items()}
    got = scorer._windows(items)[0]
    with torch.inference_mode():
        assert torch.equal(scorer._run(batch, False), scorer._run(scorer.collate(got), False))


def test_the_word_cache_stays_bounded(scorer: TransformerScorer, monkeypatch: pytest.MonkeyPatch) -> None:
    from guardrail._scoring import windows

    monkeypatch.setattr(windows, "_CACHE_WORDS", 50)
    windower = Windower(scorer._tokenizer, max_length=256, prompt_tokens=64, window_overlap=64)
    texts = [" ".join(f"w{n}x{i}" for i in range(30)) for n in range(10)]
    first = windower.encode(texts)
    assert len(windower._words) == 0  # one batch of 300 new words is more than the cache keeps
    windower.encode(texts[:1])
    assert len(windower._words) == 30
    assert (
        windower.encode(texts) == first == [scorer._tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    )


def test_a_prompt_that_leaves_no_room_is_a_clear_error(scorer: TransformerScorer) -> None:
    windower = Windower(scorer._tokenizer, max_length=40, prompt_tokens=30, window_overlap=20)
    with pytest.raises(ScorerError, match="item 0: the prompt leaves 7 tokens per window"):
        windower.windows([("a " * 40, "b " * 50)])
    assert len(windower.windows([(None, "b " * 50)])[0]) == 2  # a lone answer still has room


def test_static_shapes_keep_the_scores(scorer: TransformerScorer, recorded: list[Item]) -> None:
    # A compiled scorer pads rows to a power of two and tokens to a bucket: padding, not scores, changes.
    from guardrail._scoring.scorer import _static_shape

    assert _static_shape(5, 40, 256) == (8, 64) and _static_shape(32, 256, 256) == (32, 256)
    assert _static_shape(1, 9, 256) == (1, 32) and _static_shape(3, 300, 512) == (4, 512)
    items = recorded[:30]
    want = scorer.score(items)
    scorer.static_shapes = True
    try:
        got = scorer.score(items)
    finally:
        scorer.static_shapes = False
    assert max(abs(a - b) for v, w in zip(got, want) for a, b in zip(v, w)) < 1e-4
    padded = pad([scorer._windower.filler()], scorer._windower.pad_id, width=32)
    assert padded["input_ids"].shape == (1, 32) and int(padded["attention_mask"].sum()) == 2
