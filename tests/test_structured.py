"""Structured answers (JSON, tool calls) are read as the prose they carry; any other answer as it is."""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from _answers import BENIGN, HARMFUL
from hypothesis import given
from hypothesis import strategies as st

from guardrail import Guard, tool_call_text
from guardrail._guard.structured import prose, words
from guardrail.testing import FakeScorer

TEXT = st.text(alphabet=string.ascii_letters + string.digits + " .,!?'-\n\"\\é你", min_size=1, max_size=60)
KEYS = st.text(alphabet=string.ascii_letters + "_", min_size=1, max_size=12)
JSON = st.recursive(
    st.one_of(TEXT, st.integers(-1000, 1000), st.booleans(), st.none()),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=12,
)


def strings_in(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    return [value] if isinstance(value, str) and value else []


@pytest.mark.parametrize(
    ("text", "read"),
    [
        ("magic_function_no_args({})", "magic function no args"),
        ("getWeather()", "get weather"),
        ('get_weather({"location": "Paris"})', "get weather: location: Paris"),
        ('{"setup": "Why?", "punchline": "Because."}', "setup: Why?\npunchline: Because."),
        ('```json\n{"answer": "Rest."}\n```', "answer: Rest."),
        ('{"user": {"name": "Ann", "tags": ["a", "b"]}, "ok": true}', "user:\nname: Ann\ntags: a\ntags: b\nok: yes"),
        ('{"setup": "Why did the cat', "setup: Why did the cat"),  # a streamed window: the start...
        ('the computer?", "punchline": "To watch."}', "the computer?\npunchline: To watch."),  # ...and the end
    ],
)
def test_structured_answers_read_as_prose(text: str, read: str) -> None:
    assert prose(text) == read


@pytest.mark.parametrize(
    "text",
    ["Sure, here is a bread recipe.", "Call print(x) to see it.", "[1] Smith et al.", "{}", "[]", '"quoted"', "3"],
)
def test_other_answers_are_read_as_they_are(text: str) -> None:
    assert prose(text) is None


@given(JSON.filter(lambda v: isinstance(v, (dict, list))))
def test_every_string_of_a_json_answer_is_read(value: Any) -> None:
    text = json.dumps(value, ensure_ascii=False)
    read = prose(text)
    if not strings_in(value) and read is None:
        return  # nothing but numbers, booleans and nulls, or empty: nothing to read
    assert read is not None
    for found in strings_in(value):
        assert found in read


@given(st.text(max_size=80).filter(lambda t: t.strip()[:1] not in ("{", "[") and t.strip()[-1:] not in ("}", "]")))
def test_text_that_is_not_structured_is_left_alone(text: str) -> None:
    if "(" in text:
        return  # may be a tool call (name(...)): covered above
    assert prose(text) is None


def test_words_of_identifiers() -> None:
    assert [words(i) for i in ("send_email", "sendEmail", "send-email", "HTTPGet", "v2_api")] == [
        "send email", "send email", "send email", "httpget", "v2 api",
    ]  # fmt: skip


def test_the_guard_scores_a_tool_call_as_prose_and_says_so() -> None:
    scorer = FakeScorer()
    verdict = Guard(scorer=scorer).check(tool_call_text("send_message", {"text": "Hi there"}), prompt="Say hi")
    assert scorer.calls == [[("Say hi", "send message: text: Hi there")]]
    assert verdict.normalized == ("structured",)
    plain = Guard(scorer=scorer).check("Hi there")
    assert plain.normalized == ()


@pytest.mark.parametrize("wrap", ["tool_call", "json"])
def test_a_structured_answer_decides_as_its_content(wrap: str, guard: Guard) -> None:
    for answer in (HARMFUL, BENIGN):
        text = (
            tool_call_text("send_message", {"text": answer}) if wrap == "tool_call" else json.dumps({"answer": answer})
        )
        assert guard.check(text).decision == guard.check(answer).decision
