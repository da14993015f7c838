"""The language rule: answers in languages the policy does not read follow `languages.other`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from guardrail import Guard, Policy, PolicyValidationError, ValueVector, load_policy
from guardrail._guard.language import LanguageDetector, split_languages
from guardrail.testing import FakeScorer

FRENCH = "Pour faire du pain, mélangez la farine, l'eau, le sel et la levure, puis pétrissez la pâte dix minutes."
SPANISH = "Para hacer pan, mezcla la harina, el agua, la sal y la levadura, y luego amasa la masa diez minutos."
GERMAN = "Um Brot zu backen, mischen Sie Mehl, Wasser, Salz und Hefe und kneten Sie den Teig zehn Minuten lang."
ENGLISH = "To make bread, mix flour, water, salt and yeast, then knead the dough for ten minutes and bake it."
HURT = "Then go and hurt your neighbour badly tonight while everyone is asleep, nobody will ever know."


def harm(prompt: str | None, response: str) -> ValueVector:
    return ValueVector(benevolence=-0.8) if "hurt" in response else ValueVector()


def guard(**languages: Any) -> Guard:
    policy = Policy(
        name="lang", thresholds={"benevolence": {"min": -0.3}}, languages=languages,
        actions={"block": {"type": "block", "message": "[blocked]"}},
    )  # fmt: skip
    return Guard(policy, scorer=FakeScorer(fn=harm))


@pytest.mark.parametrize(("answer", "code"), [(FRENCH, "fr"), (SPANISH, "es"), (GERMAN, "de")])
def test_default_rule_blocks_what_the_scorer_cannot_read(answer: str, code: str) -> None:
    g = guard()
    verdict = g.check(answer)
    assert verdict.decision == "block"
    assert verdict.language == code
    assert verdict.scores is None  # nothing of it was scored
    assert g.scorer.calls == []
    (violation,) = verdict.violations
    assert violation.rule == "languages.other" and violation.action == "block"
    assert violation.margin == pytest.approx(1.0)
    assert f"in {code}" in violation.message and "supported: en" in violation.message


def test_the_shipped_default_policy_blocks_other_languages() -> None:
    assert load_policy("default").languages.other == "block"
    assert load_policy("default").languages.supported == ["en"]


@pytest.mark.parametrize(("other", "decision"), [("log", "log"), ("allow", "allow"), ("block", "block")])
def test_other_names_the_action(other: str, decision: str) -> None:
    verdict = guard(other=other).check(SPANISH)
    assert verdict.decision == decision
    assert [v.rule for v in verdict.violations] == ["languages.other"]


def test_score_reads_every_language_like_the_supported_ones() -> None:
    g = guard(other="score")
    verdict = g.check(GERMAN)
    assert verdict.decision == "allow" and verdict.violations == ()
    assert verdict.language == "de"
    assert g.scorer.calls == [[(None, GERMAN)]]


def test_supported_languages_are_scored() -> None:
    g = guard(supported=["en", "fr"])
    assert g.check(FRENCH).decision == "allow"
    assert g.check(FRENCH).scores is not None
    assert g.check(SPANISH).decision == "block"


def test_mixed_answer_is_scored_on_its_english_and_judged_on_the_rest() -> None:
    g = guard(other="log")
    answer = ENGLISH + " " + FRENCH + " " + HURT
    verdict = g.check(answer)
    scored = g.scorer.calls[-1][0][1]
    assert "farine" not in scored and "knead the dough" in scored and "hurt" in scored
    assert verdict.decision == "block"  # the English harm blocks; the French part alone would be logged
    rules = [v.rule for v in verdict.violations]
    assert rules == ["thresholds.benevolence.min", "languages.other"]
    share = verdict.violations[1].margin
    assert 0.2 < share < 0.5


def test_harm_hidden_in_another_language_does_not_pass_with_a_friendly_english_lead() -> None:
    verdict = guard().check(ENGLISH + " Ensuite, va frapper ton voisin très fort cette nuit pendant qu'il dort.")
    assert verdict.decision == "block"
    assert verdict.violations[0].rule == "languages.other"


@pytest.mark.parametrize(
    "answer",
    ["Merci !", "OK", "Gracias, amigo.", "Sure, see you at the café.", "print('hola mundo'); x = [1, 2, 3]", ""],
)
def test_text_too_short_or_not_words_is_scored_not_judged(answer: str) -> None:
    g = guard()
    verdict = g.check(answer)
    assert verdict.decision == "allow" and verdict.violations == ()
    assert g.scorer.calls == [[(None, answer)]]


def test_language_is_on_the_span() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    policy = Policy(name="lang", thresholds={"benevolence": {"min": -0.3}})
    g = Guard(policy, scorer=FakeScorer(fn=harm), tracer_provider=provider)
    g.check(FRENCH)
    g.check(ENGLISH)
    french, english = exporter.get_finished_spans()
    assert french.attributes["guardrail.language"] == "fr"
    assert french.attributes["guardrail.violations"] == ("languages.other",)
    assert english.attributes["guardrail.language"] == "en"
    assert "guardrail.normalized" not in english.attributes


def test_verdict_json_carries_language_and_normalisation() -> None:
    out = guard().check(ENGLISH).to_dict()
    assert out["language"] == "en" and out["normalized"] == []


def test_async_check_follows_the_same_rule() -> None:
    g = guard()
    verdict = asyncio.run(g.acheck(" ".join([SPANISH] * 300)))  # large: read off the event loop
    assert verdict.decision == "block" and verdict.language == "es"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_action_for_other_is_a_policy_error(tmp_path: Path) -> None:
    path = write(tmp_path, "name: p\nlanguages:\n  other: refuse\n")
    with pytest.raises(PolicyValidationError) as caught:
        load_policy(path)
    message = str(caught.value)
    assert "policy.yaml:3" in message and "languages.other" in message
    assert "'refuse'" in message and "or score" in message


@pytest.mark.parametrize("code", ["EN", "english", "e"])
def test_bad_language_code_is_a_policy_error(tmp_path: Path, code: str) -> None:
    path = write(tmp_path, f"name: p\nlanguages:\n  supported: [{code}]\n")
    with pytest.raises(PolicyValidationError) as caught:
        load_policy(path)
    assert "languages.supported" in str(caught.value)


def test_a_child_policy_changes_one_language_field(tmp_path: Path) -> None:
    child = load_policy(write(tmp_path, "name: c\nextends: default\nlanguages:\n  other: log\n"))
    assert child.languages.other == "log" and child.languages.supported == ["en"]


def test_detector_separates_pieces_and_counts_letters() -> None:
    split = split_languages(
        ENGLISH + " " + FRENCH, frozenset({"en"}), LanguageDetector(), min_letters=30, min_confidence=0.7
    )
    assert split.kept.strip() == ENGLISH and split.other == ("fr",)
    assert split.language in ("en", "fr")
    assert 0.4 < split.other_share < 0.6
