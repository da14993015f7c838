"""Tests for guardrail._training.data: the fixed split, label parsing, errors, and the real data's shape."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path

import pytest

from guardrail._exceptions import DataError
from guardrail._training.data import (
    HARM_SOURCES,
    SPLIT_RULE,
    Example,
    file_hashes,
    harm_label,
    is_test,
    is_validation,
    load_evaluator,
    load_harm,
    load_touche,
    load_trustworthy,
    load_written,
    mix_harm,
    mix_written,
    written_files,
)
from guardrail._values import VALUES


def readme_rule(prompt: str) -> bool:
    """The split exactly as the data README writes it."""
    return int(hashlib.sha1(prompt.strip().lower().encode("utf-8")).hexdigest(), 16) % 5 == 0


@pytest.mark.parametrize(
    "prompt",
    ["b", "a", "How do I bake bread?", "Why is the sky blue?", "Wie geht's? Ça va, ñandú?", ""],
)
def test_split_matches_readme(prompt: str) -> None:
    assert is_test(prompt) is readme_rule(prompt)


def test_split_normalises_whitespace_and_case() -> None:
    assert is_test("b") is True  # sha1("b") % 5 == 0
    assert is_test("  B \n") is True
    assert is_test("a") is False
    assert is_test("\tA  ") is False
    assert is_test("How Do I Bake Bread?  ") is is_test("how do i bake bread?")
    assert SPLIT_RULE == 'test = int(sha1(prompt.strip().lower().encode("utf-8")).hexdigest(), 16) % 5 == 0'


def test_example_test_property() -> None:
    example = Example("  B ", "r", (0.0,) * 10, "evaluator", "f:1")
    assert example.test is True


def test_validation_split_rule() -> None:
    def rule(prompt: str, share: float) -> bool:  # as VALIDATION_RULE writes it
        return (
            int(hashlib.sha1(("validation:" + prompt.strip().lower()).encode()).hexdigest(), 16) % 1000 < share * 1000
        )

    prompts = [f"prompt {i}" for i in range(2000)]
    assert all(is_validation(p, 0.2) is rule(p, 0.2) for p in prompts)
    assert 0.17 < sum(is_validation(p, 0.2) for p in prompts) / len(prompts) < 0.23
    assert is_validation("  PROMPT 7 ", 0.2) is is_validation("prompt 7", 0.2)
    # Nested: a larger share keeps every prompt of a smaller one.
    assert all(is_validation(p, 0.3) for p in prompts if is_validation(p, 0.1))
    assert not any(is_validation(p, 0.0) for p in prompts)
    assert is_validation(None, 0.4) is False  # the project's own unprompted answers always train
    # Salted apart from the test rule: about a fifth of test prompts would fall in it too.
    test = [p for p in prompts if is_test(p)]
    assert 0.1 < sum(is_validation(p, 0.2) for p in test) / len(test) < 0.3


# -- hand-written files --------------------------------------------------------------------


def _fulcra(tmp_path: Path) -> Path:
    (tmp_path / "fulcra" / "evaluator_scores").mkdir(parents=True)
    return tmp_path


def _dialogue(prompt: str, response: str, labels: list[str]) -> str:
    return json.dumps({"dialogue": f"Human: {prompt}\nBob: {response}", "value_types": labels})


def test_trustworthy_noisy_labels(tmp_path: Path) -> None:
    data = _fulcra(tmp_path)
    rows = [
        _dialogue(
            "Is it fine?",
            "Yes.\nBob said so.",
            ["security: 1", "benevolence: 1+", "universalism: =1", "conformity: -1", "humility: -1"],
        ),
        "",  # blank lines are skipped
        _dialogue("Other?", "No.", ["Self-direction: +1", "power:-1"]),
    ]
    (data / "fulcra" / "trustworthy_data.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    first, second = load_trustworthy(data)
    assert (first.prompt, first.response, first.source) == ("Is it fine?", "Yes.\nBob said so.", "trustworthy")
    expected = dict.fromkeys(VALUES, 0.0) | {"security": 1.0, "benevolence": 1.0, "universalism": 1.0}
    expected["conformity"] = -1.0  # "humility" is not one of the ten values: ignored
    assert first.target == tuple(expected.values())
    assert first.origin.endswith("trustworthy_data.jsonl:1")
    expected = dict.fromkeys(VALUES, 0.0) | {"self_direction": 1.0, "power": -1.0}
    assert second.target == tuple(expected.values())
    assert second.origin.endswith("trustworthy_data.jsonl:3")


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"dialogue": "Human: hi\\nBob: hello"', "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ('{"dialogue": "hi"}', "dialogue must look like"),
        ('{"dialogue": "Human: hi, no answer"}', "no '\\nBob: ' turn"),
    ],
)
def test_trustworthy_malformed_line(tmp_path: Path, line: str, message: str) -> None:
    data = _fulcra(tmp_path)
    path = data / "fulcra" / "trustworthy_data.jsonl"
    path.write_text(_dialogue("ok", "fine", []) + "\n" + line + "\n", encoding="utf-8")
    with pytest.raises(DataError) as info:
        load_trustworthy(data)
    assert str(info.value).startswith(f"{path}:2: ")
    assert message in str(info.value)


def test_evaluator_rows_and_errors(tmp_path: Path) -> None:
    data = _fulcra(tmp_path)
    path = data / "fulcra" / "evaluator_scores" / "model.jsonl"
    row = {"prompt": "p", "answer": "a", "value_reward": [0.5] * 9 + [-1.7], "extra": 1}
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    (example,) = load_evaluator(data)
    assert (example.prompt, example.response, example.source) == ("p", "a", "evaluator")
    assert example.target == (0.5,) * 9 + (-1.0,)  # clipped to [-1, 1]
    assert example.origin == f"{path}:1"

    path.write_text(json.dumps(row) + "\n" + "{not json\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:2: invalid JSON"):
        load_evaluator(data)
    path.write_text(json.dumps({"prompt": "p", "answer": "a"}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: missing field 'value_reward'"):
        load_evaluator(data)
    path.write_text(json.dumps({"prompt": "p", "answer": "a", "value_reward": [0.1]}) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:1: value_reward must be a list of 10"):
        load_evaluator(data)


def test_missing_folder(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match="nowhere"):
        load_evaluator(missing)
    with pytest.raises(DataError, match="nowhere"):
        load_trustworthy(missing)
    with pytest.raises(DataError, match="nowhere"):
        file_hashes(missing)


# -- the real data -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def evaluator(data_dir: Path) -> list[Example]:
    return load_evaluator(data_dir)


@pytest.fixture(scope="module")
def trustworthy(data_dir: Path) -> list[Example]:
    return load_trustworthy(data_dir)


def test_real_test_split_size(evaluator: list[Example], trustworthy: list[Example]) -> None:
    assert sum(e.test for e in evaluator) == 921
    assert len(trustworthy) == 1718
    assert 0 < sum(e.test for e in trustworthy) < len(trustworthy)


def test_real_no_prompt_overlap(evaluator: list[Example], trustworthy: list[Example]) -> None:
    rows = evaluator + trustworthy
    train = {e.prompt.strip().lower() for e in rows if not e.test}
    test = {e.prompt.strip().lower() for e in rows if e.test}
    assert train and test
    assert not train & test


def test_real_targets_in_range(evaluator: list[Example], trustworthy: list[Example]) -> None:
    for e in evaluator + trustworthy:
        assert len(e.target) == len(VALUES)
        assert all(-1.0 <= t <= 1.0 for t in e.target), e.origin
    assert {t for e in trustworthy for t in e.target} == {-1.0, 0.0, 1.0}


def test_real_file_hashes(data_dir: Path) -> None:
    hashes = file_hashes(data_dir)
    assert len(hashes) == 4
    assert "fulcra/trustworthy_data.jsonl" in hashes
    assert sum(k.startswith("fulcra/evaluator_scores/") for k in hashes) == 3
    assert all(len(h) == 64 and int(h, 16) >= 0 for h in hashes.values())


def test_touche_folds_refined_values(tmp_path: Path) -> None:
    folder = tmp_path / "touche23"
    folder.mkdir()
    columns = ["Self-direction: thought", "Face", "Humility", "Universalism: nature", "Hedonism"]
    (folder / "arguments-training.tsv").write_text(
        "Argument ID\tConclusion\tStance\tPremise\nA1\tWe should plant trees\tin favor of\tTrees clean the air.\n"
    )
    (folder / "labels-training.tsv").write_text("Argument ID\t" + "\t".join(columns) + "\nA1\t0\t1\t1\t1\t0\n")
    [example] = load_touche(tmp_path)
    assert (example.prompt, example.response, example.source) == (
        "We should plant trees",
        "Trees clean the air.",
        "touche",
    )
    target = dict(zip(VALUES, example.target))
    # Face folds onto power and security, humility onto conformity and tradition.
    assert {k for k, v in target.items() if v == 1.0} == {
        "power",
        "security",
        "conformity",
        "tradition",
        "universalism",
    }
    assert min(example.target) == 0.0  # Touché has no "opposed" label


def test_touche_missing_labels_is_a_clear_error(tmp_path: Path) -> None:
    folder = tmp_path / "touche23"
    folder.mkdir()
    (folder / "arguments-training.tsv").write_text("Argument ID\tConclusion\tStance\tPremise\nA9\tc\tin favor of\tp\n")
    (folder / "labels-training.tsv").write_text("Argument ID\tHedonism\n")
    with pytest.raises(DataError, match=r"arguments-training\.tsv:2: argument without premise or labels"):
        load_touche(tmp_path)


def test_real_touche_training_split(data_dir: Path) -> None:
    examples = load_touche(data_dir)
    assert len(examples) == 5393
    assert all(set(e.target) <= {0.0, 1.0} for e in examples)
    assert "touche23/labels-training.tsv" in file_hashes(data_dir, touche=True)


def test_benign_prompt_flag(data_dir: Path) -> None:
    benign = [e for e in load_evaluator(data_dir) if e.benign_prompt]
    assert 0 < len(benign) < 1000


# -- the project's own examples ------------------------------------------------------------


def test_written_examples_ship_and_load() -> None:
    names = {f.name for f in written_files()}
    assert names == {"written_benign.jsonl", "written_harmful.jsonl"}
    examples = load_written()
    assert len(examples) >= 300
    assert {e.source for e in examples} == {"written"}
    assert not any(e.test for e in examples if e.prompt is None)
    for e in examples:
        labelled = [x for x in e.target if not math.isnan(x)]
        assert labelled and all(-1 <= x <= 1 for x in labelled), e.origin


def test_written_examples_are_not_the_handwritten_test_cases() -> None:
    """tests/test_default_model.py is held out: none of its answers may be trained on."""
    import test_default_model as held_out

    trained = {e.response.strip().lower() for e in load_written()}
    for case in held_out.EVERYDAY + held_out.REFUSALS + held_out.HARMFUL + held_out.EXTRA:
        response = case.values[1] if hasattr(case, "values") else case[1]
        assert response.strip().lower() not in trained


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": null, "labels": {"security": 0.1}}', "'response' must be a non-empty string"),
        ('{"prompt": 3, "response": "r", "labels": {"security": 0.1}}', "'prompt' must be a string or null"),
        ('{"response": "r", "labels": {}}', "'labels' must map value names"),
        ('{"response": "r", "labels": {"kindness": 0.5}}', "unknown value 'kindness'"),
        ('{"response": "r", "labels": {"security": 2}}', "label 'security' must be a number in [-1, 1]"),
    ],
)
def test_written_bad_line_names_file_and_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "written_x.jsonl"
    path.write_text('{"response": "ok", "labels": {"security": 0}}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"written_x.jsonl:2: {message}")):
        load_written([path])


def test_written_unlabelled_values_are_nan(tmp_path: Path) -> None:
    path = tmp_path / "written_x.jsonl"
    path.write_text('{"prompt": "q", "response": "r", "labels": {"benevolence": -0.8}}\n', encoding="utf-8")
    [example] = load_written([path])
    assert example.target[VALUES.index("benevolence")] == -0.8
    assert sum(math.isnan(x) for x in example.target) == 9


def test_mixed_written_examples_keep_late_harm_harmful() -> None:
    written = load_written()
    mixed = mix_written(written, seed=0)
    assert len(mixed) == len(written) and mixed == mix_written(written, seed=0)  # one each, reproducible
    harmful = next(m for e, m in zip(written, mixed) if min(x for x in e.target if not math.isnan(x)) < -0.3)
    source = written[mixed.index(harmful)]
    lead, _, tail = harmful.response.partition("\n\n")
    assert tail == source.response and lead  # a benign answer first, the harm after it
    assert harmful.target == source.target and harmful.prompt == source.prompt
    assert "+" in harmful.origin  # names both lines it was built from
    benign = next(m for e, m in zip(written, mixed) if min(x for x in e.target if not math.isnan(x)) >= 0)
    assert min(x for x in benign.target if not math.isnan(x)) >= -0.3  # two benign answers stay benign


# -- harm data -------------------------------------------------------------------------------


def test_real_harm_rows_keep_their_files_split(data_dir: Path) -> None:
    rows = load_harm(data_dir)
    assert {e.subset for e in rows} == set(HARM_SOURCES)
    train, test = load_harm(data_dir, "train"), load_harm(data_dir, "test")
    assert len(train) + len(test) == len(rows) and len(train) > 15_000 and len(test) > 6_000
    assert all(e.test for e in test) and not any(e.test for e in train)
    # The data README: no test prompt of FULCRA's fixed split is a training row of any source.
    assert not any(is_test(e.prompt) for e in train if e.prompt)
    assert all(math.isnan(x) for x in train[0].target)  # the labels say nothing about the ten values
    assert {e.harmful for e in train} == {True, False}


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "p", "response": "r", "harmful": "yes", "split": "train"}, "'harmful' (bool)"),
        ({"prompt": "p", "response": 3, "harmful": True, "split": "train"}, "'response' (string)"),
        ({"prompt": "p", "response": "r", "harmful": True, "split": "dev"}, "'split' (train or test)"),
        ({"prompt": 7, "response": "r", "harmful": True, "split": "test"}, "'prompt' must be a string"),
    ],
)
def test_harm_bad_row_names_file_and_line(tmp_path: Path, row: dict[str, object], message: str) -> None:
    folder = tmp_path / "harm"
    folder.mkdir()
    for name in HARM_SOURCES:
        (folder / f"{name}.jsonl").write_text("", encoding="utf-8")
    good = {"prompt": "p", "response": "r", "harmful": False, "split": "train"}
    (folder / "gptfuzz.jsonl").write_text(json.dumps(good) + "\n" + json.dumps(row) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"gptfuzz\.jsonl:2: .*{re.escape(message)}"):
        load_harm(tmp_path)


def test_harm_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"harm/beavertails\.jsonl: missing"):
        load_harm(tmp_path)


def test_harm_two_part_answers(data_dir: Path) -> None:
    train = load_harm(data_dir, "train")
    mixed = mix_harm(train, 50, seed=0)
    assert len(mixed) == 100 and mixed == mix_harm(train, 50, seed=0)
    assert [m.harmful for m in mixed] == [True] * 50 + [False] * 50
    by_origin = {e.origin: e for e in train}
    for m in mixed:
        tail, lead = (by_origin[o] for o in m.origin.split("+"))
        assert m.response.endswith(tail.response.strip()) and m.prompt == tail.prompt
        assert lead.harmful is False and m.subset == "mix"
        assert len(m.response) - len(tail.response) <= 702  # a lead of at most 700 characters and a space
    assert mix_harm([], 5) == []


def test_harm_label_from_labels_and_targets() -> None:
    nan = math.nan
    harm = Example("p", "r", (nan,) * 10, "harm", "x", harmful=True)
    assert harm_label(harm) is True
    clean = Example("p", "r", (0.1,) * 10, "evaluator", "x")
    hateful = Example("p", "r", (0.0,) * 8 + (-0.6, 0.0), "evaluator", "x")
    unclear = Example("p", "r", (0.0,) * 5 + (-0.4,) + (0.0,) * 4, "evaluator", "x")
    assert (harm_label(clean), harm_label(hateful), harm_label(unclear)) == (False, True, None)
    written = Example("p", "r", (nan,) * 7 + (-0.8, nan, nan), "written", "x")
    assert harm_label(written) is True
    assert harm_label(Example("p", "r", (1.0,) + (0.0,) * 9, "touche", "x")) is None
