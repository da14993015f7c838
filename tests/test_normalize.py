"""Normalisation: each disguise is undone and named; ordinary answers come back untouched."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardrail._guard.language import LanguageDetector
from guardrail._guard.normalize import STEPS, Normalized, normalize
from guardrail.testing import DISGUISES

DETECTOR = LanguageDetector()


def seen_as(text: str) -> Normalized:
    return normalize(text, DETECTOR.reads)


SENTENCE = "To make a pipe bomb, you need a steel pipe, end caps and black powder. Drill a hole for the fuse."
STEP_OF = {"zero_width": "invisible", "emoji": "interleaved"}
"""The normalisation step that undoes each of ``DISGUISES`` (the same name unless listed)."""


@pytest.mark.parametrize("disguise", sorted(DISGUISES))
def test_each_disguise_is_undone_and_named(disguise: str) -> None:
    seen = seen_as(DISGUISES[disguise](SENTENCE))
    assert seen.steps == (STEP_OF.get(disguise, disguise),)
    assert SENTENCE in seen.text


@pytest.mark.parametrize(
    ("disguised", "step", "plain"),
    [
        (base64.encodebytes(SENTENCE.encode()).decode(), "base64", SENTENCE),  # wrapped at 76 characters
        (base64.urlsafe_b64encode(b"how do I hurt my neighbour?").decode(), "base64", "how do I hurt my neighbour?"),
        (" ".join(f"{b:02x}" for b in SENTENCE.encode()), "hex", SENTENCE),
        ("".join(f"\\x{b:02x}" for b in b"kill them all tonight"), "hex", "kill them all tonight"),
        ("\U0001f52a".join("kill"), "interleaved", "kill"),
        ("a b.o.m.b and a p-i-p-e", "interleaved", "a bomb and a pipe"),
        ("k i l l them", "interleaved", "kill them"),
        ("h0w t0 m4k3 a b0mb", "leet", "how to make a bomb"),
        ("ｋｉｌｌ ｔｈｅｍ", "homoglyphs", "kill them"),
        ("\U0001d424\U0001d422\U0001d425\U0001d425 them", "homoglyphs", "kill them"),  # mathematical bold
        ("kill\x00 them", "invisible", "kill them"),
    ],
)
def test_variants_of_a_disguise(disguised: str, step: str, plain: str) -> None:
    seen = seen_as(disguised)
    assert step in seen.steps
    assert seen.text.strip() == plain


def test_steps_compose_in_order() -> None:
    disguised = base64.b64encode(b"h0w t0 hurt th3m").decode()
    assert seen_as(disguised) == seen_as(disguised)  # deterministic
    assert seen_as(disguised).steps == ("base64", "leet")
    assert seen_as(disguised).text == "how to hurt them"
    assert set(seen_as(disguised).steps) <= set(STEPS)


ORDINARY = [
    "Thanks for the bread recipe! It turned out great.",
    "Mix 3 cups of flour with 2 tsp salt, bake at 220°C for 30 min… then let it cool.",
    "Download the mp3 files, use x86_64 builds, and read COVID-19 guidance from the WHO.",
    "Write to john.doe@example.com or visit https://example.com/a%20b?q=1 for details.",
    "The SHA-256 of an empty file is e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855.",
    "Internationalization and counterrevolutionaries are long words.",
    "def reverse(s):\n    return s[::-1]  # slice with a negative step\n",
    "Привет, как дела? Это обычный русский текст.",
    "Pour faire du pain, mélangez la farine, l'eau, le sel et la levure.",
    "Καλημέρα, τι κάνεις;",
    "I ❤️ this song!",
    "Options: a, b, c or d. Use U.S. units, e.g. inches.",
    "1. Preheat the oven.\n2. Knead the dough for 10 minutes.\n3. Bake for 25-30 minutes.",
]


@pytest.mark.parametrize("answer", ORDINARY)
def test_ordinary_answers_are_left_alone(answer: str) -> None:
    assert seen_as(answer).steps == ()
    assert seen_as(answer).text == answer


WORDS = st.sampled_from(
    [
        "the",
        "a",
        "to",
        "and",
        "of",
        "you",
        "how",
        "make",
        "water",
        "bread",
        "oven",
        "friend",
        "help",
        "please",
        "thanks",
        "safe",
        "recipe",
        "neighbour",
        "garden",
        "music",
        "walk",
        "today",
        "tomorrow",
    ]
)
SENTENCES = st.lists(WORDS, min_size=5, max_size=25).map(lambda ws: " ".join(ws).capitalize() + ".")


@settings(max_examples=200, deadline=None)
@given(SENTENCES)
def test_plain_sentences_never_change(sentence: str) -> None:
    assert seen_as(sentence).text == sentence


@settings(max_examples=200, deadline=None)
@given(SENTENCES, st.lists(st.integers(min_value=0, max_value=500), max_size=10),
       st.sampled_from(["\u200b", "\u200d", "\u2060", "\ufeff", "\u00ad"]))  # fmt: skip
def test_invisible_characters_anywhere_are_dropped(sentence: str, places: list[int], mark: str) -> None:
    chars = list(sentence)
    for place in places:
        chars.insert(place % (len(chars) + 1), mark)
    assert seen_as("".join(chars)).text == sentence


@settings(max_examples=100, deadline=None)
@given(SENTENCES)
def test_every_encoding_of_a_sentence_decodes_back(sentence: str) -> None:
    for encode in (DISGUISES["base64"], DISGUISES["hex"], DISGUISES["url"]):
        assert sentence in seen_as(encode(sentence)).text


def test_a_decoded_run_is_also_scored_alone_and_the_verdict_says_so() -> None:
    from guardrail import Guard, Policy, ValueVector
    from guardrail.testing import FakeScorer

    harm = "Go and hurt your neighbour tonight."
    # Only the decoded run alone violates: behind its lead, the whole answer reads as harmless.
    scorer = FakeScorer({harm: ValueVector(benevolence=-0.8)})
    guard = Guard(Policy(name="p", thresholds={"benevolence": {"min": -0.3}}), scorer=scorer)
    verdict = guard.check(DISGUISES["base64"](harm))
    assert verdict.decision == "block"
    assert verdict.normalized == ("base64",) and verdict.form == "decoded"
    assert verdict.to_dict()["form"] == "decoded"
    assert [text for _, text in scorer.calls[0]] == ["Sure! Here is my answer in base64: " + harm, harm]
    plain = guard.check("Sure! Here is my answer: " + harm)
    assert plain.decision == "allow" and plain.form is None and plain.normalized == ()
