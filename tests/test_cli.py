"""Tests for guardrail._cli: every command in-process through typer's CliRunner, on the real model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from guardrail._cli import app
from guardrail._resources import policies_dir, shipped_policy_names
from guardrail._training.config import TrainConfig
from guardrail._values import VALUES

FIXTURES = Path(__file__).parent / "fixtures" / "policies"
HATEFUL = (
    "Immigrants are parasites and criminals. They are inferior people who should be driven out by any means necessary."
)
BENIGN = (
    "Baking bread at home is easy and fun: mix flour, water, salt and yeast, knead the dough, let it rise, "
    "then bake it until the crust is golden. Enjoy it warm with your family!"
)

# Where each invalid fixture's first error points (run from FIXTURES); see tests/test_loader.py.
LOCATIONS = {
    "bad_inherited": "invalid/bad_inherited_base.yaml:3:31",  # the inherited key lives in the parent
    "bad_inherited_base": "invalid/bad_inherited_base.yaml:3:31",
    "bad_syntax": "invalid/bad_syntax.yaml:4:8",
    "box_and_distance": "invalid/box_and_distance.yaml:3:3",
    "cycle_a": "invalid/cycle_a.yaml:3:10",
    "cycle_b": "invalid/cycle_b.yaml:2:10",
    "many_issues": "invalid/many_issues.yaml:2:7",
    "min_gt_max": "invalid/min_gt_max.yaml:3:3",
    "missing_extends": "invalid/missing_extends.yaml:2:10",
    "rewrite_without_strategy": "invalid/rewrite_without_strategy.yaml:3:3",
    "top_level_list": "invalid/top_level_list.yaml:1:1",
    "unknown_action": "invalid/unknown_action.yaml:5:36",
    "unknown_dimension": "invalid/unknown_dimension.yaml:4:3",
    "unknown_top_level_key": "invalid/unknown_top_level_key.yaml:3:1",
    "wrong_type": "invalid/wrong_type.yaml:4:10",
}


def invoke(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=input)


def expect(result: Result, code: int) -> Result:
    assert result.exit_code == code, (
        f"exit {result.exit_code}, expected {code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n"
        f"exception: {result.exception!r}"
    )
    return result


def check_json(*args: str, input: str | None = None) -> dict[str, Any]:
    stdout = expect(invoke("check", "--json", *args, input=input), 0).stdout
    assert stdout.count("\n") == 1 and stdout.endswith("\n"), stdout
    data = json.loads(stdout)
    assert isinstance(data, dict)
    return data


# -- check ---------------------------------------------------------------------------------


def test_check_json_blocked() -> None:
    data = check_json(HATEFUL)
    assert data["decision"] == "block"
    assert list(data["scores"]) == list(VALUES)
    assert all(-1.0 <= s <= 1.0 for s in data["scores"].values())
    assert data["violations"]
    for v in data["violations"]:
        assert {"rule", "dimension", "observed", "bound", "margin"} <= set(v)
        assert v["margin"] > 0
    assert data["policy"]["name"] == "default"
    assert data["policy"]["version"] == "1.2"


def test_check_json_allowed() -> None:
    data = check_json(BENIGN, "--prompt", "How do I bake bread at home?")
    assert data["decision"] == "allow"
    assert list(data["scores"]) == list(VALUES)
    assert data["violations"] == []
    assert {"name", "version"} <= set(data["policy"])


def test_check_plain_explains() -> None:
    stdout = expect(invoke("check", HATEFUL), 0).stdout
    for name in VALUES:
        assert name in stdout
    assert "decision: block" in stdout
    assert "below the floor" in stdout and " by " in stdout
    assert "[high] thresholds." in stdout  # the severity is text, not Rich markup


def test_check_reads_stdin() -> None:
    assert check_json("-", input=HATEFUL)["decision"] == "block"


@pytest.mark.parametrize(("args", "stdin"), [(("",), None), (("   ",), None), (("-",), " \n")])
def test_check_empty_response(args: tuple[str, ...], stdin: str | None) -> None:
    result = expect(invoke("check", *args, input=stdin), 2)
    assert "RESPONSE is empty" in result.stderr
    assert result.stdout == ""


def test_every_invalid_fixture_is_covered() -> None:
    assert sorted(p.stem for p in (FIXTURES / "invalid").glob("*.yaml")) == sorted(LOCATIONS)


@pytest.mark.parametrize("name", sorted(LOCATIONS))
def test_check_invalid_policy(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    result = expect(invoke("check", "--policy", f"invalid/{name}.yaml", "hello"), 2)
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"error: {LOCATIONS[name]}  "), result.stderr
    if name == "many_issues":  # one issue per line, each located
        assert len(lines) == 4
        assert all(line.startswith("invalid/many_issues.yaml:") for line in lines[1:])
    else:
        assert len(lines) == 1, result.stderr


def test_check_unknown_policy_name() -> None:
    result = expect(invoke("check", "--policy", "no_such_policy", "hello"), 2)
    assert "'no_such_policy' not found" in result.stderr
    assert "default" in result.stderr  # lists the shipped ones


def test_check_missing_model(tmp_path: Path) -> None:
    result = expect(invoke("check", "--model", str(tmp_path / "nowhere"), "hello"), 2)
    assert result.stderr.startswith("error: ")


# -- policy validate / schema --------------------------------------------------------------


def test_policy_validate_shipped() -> None:
    files = [str(policies_dir() / f"{name}.yaml") for name in shipped_policy_names()]
    result = expect(invoke("policy", "validate", *files), 0)
    assert result.stdout.count("ok ") == len(files) == 4
    assert result.stderr == ""


def test_policy_validate_invalid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    result = expect(invoke("policy", "validate", "valid/base.yaml", "invalid/wrong_type.yaml"), 2)
    assert "ok valid/base.yaml" in result.stdout
    assert result.stderr == (
        "invalid/wrong_type.yaml:4:10  thresholds.benevolence.min  "
        "Input should be a valid number, unable to parse string as a number (got 'high')\n"
    )


def test_policy_schema() -> None:
    schema = json.loads(expect(invoke("policy", "schema"), 0).stdout)
    keys = {"thresholds", "regions", "actions", "on_error", "timeout_ms", "mode", "extends"}
    assert keys <= set(schema["properties"])


# -- score ---------------------------------------------------------------------------------


def _write_jsonl(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


GOOD_ROWS = [
    {"id": 1, "prompt": "How do I bake bread at home?", "response": BENIGN, "meta": {"lang": "en"}},
    {"id": 2, "prompt": None, "response": HATEFUL},
    {"id": 3, "response": "Sure, happy to help."},
]


def test_score_keeps_fields_and_adds_scores(tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [json.dumps(r) for r in GOOD_ROWS])
    target = tmp_path / "out.jsonl"
    expect(invoke("score", str(source), str(target)), 0)
    rows = _read_jsonl(target)
    assert len(rows) == len(GOOD_ROWS)
    for row, original in zip(rows, GOOD_ROWS):
        assert {k: row[k] for k in original} == original
        assert list(row["scores"]) == list(VALUES)
        assert "decision" not in row and "violations" not in row


def test_score_with_policy_decides(tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [json.dumps(r) for r in GOOD_ROWS[:2]])
    target = tmp_path / "out.jsonl"
    expect(invoke("score", str(source), str(target), "--policy", "default"), 0)
    allowed, blocked = _read_jsonl(target)
    assert (allowed["decision"], allowed["violations"]) == ("allow", [])
    assert blocked["decision"] == "block"
    assert blocked["violations"] and {"rule", "margin"} <= set(blocked["violations"][0])
    assert list(blocked["scores"]) == list(VALUES)


BAD_LINES = {
    "invalid JSON": '{"response": "unterminated',
    "field 'response'": '{"prompt": "no response here"}',
    "field 'prompt'": '{"prompt": 5, "response": "a number is not a prompt"}',
}


@pytest.mark.parametrize("problem", sorted(BAD_LINES))
def test_score_bad_line_fails(tmp_path: Path, problem: str) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [json.dumps(GOOD_ROWS[0]), BAD_LINES[problem]])
    target = tmp_path / "out.jsonl"
    result = expect(invoke("score", str(source), str(target)), 2)
    assert f"{source}:2: " in result.stderr
    assert problem in result.stderr
    assert not target.exists()


def test_score_bad_lines_skipped(tmp_path: Path) -> None:
    good = [json.dumps(r) for r in GOOD_ROWS]
    bad = sorted(BAD_LINES.values())
    lines = [good[0], bad[0], good[1], "", bad[1], good[2], bad[2]]  # bad on lines 2, 5, 7
    source = _write_jsonl(tmp_path / "in.jsonl", lines)
    target = tmp_path / "out.jsonl"
    result = expect(invoke("score", "--on-bad-line", "skip", str(source), str(target)), 0)
    for number in (2, 5, 7):
        assert f"skipped {source}:{number}: " in result.stderr
    assert result.stderr.count("skipped ") == 3
    rows = _read_jsonl(target)
    assert [r["id"] for r in rows] == [1, 2, 3]


def _tight_policy(tmp_path: Path) -> Path:
    # 1 ms per check: far too little for any batch, so only the batch-scaled limit can save it.
    return _write_jsonl(tmp_path / "tight.yaml", ["name: tight", "extends: default", "timeout_ms: 1"])


def test_score_failed_rows_carry_their_error_and_fail_the_run(tmp_path: Path) -> None:
    # Issue 13: a timed-out batch was written as "scores": null, "decision": "block", exit 0.
    source = _write_jsonl(tmp_path / "in.jsonl", [json.dumps(r) for r in GOOD_ROWS])
    target = tmp_path / "out.jsonl"
    result = expect(invoke("score", str(source), str(target), "--timeout-ms", "0.001", "--policy", "default"), 1)
    rows = _read_jsonl(target)
    assert [r["id"] for r in rows] == [1, 2, 3]
    for row in rows:
        assert row["scores"] is None and "ScoringTimeout" in row["error"]
        assert row["decision"] is None and row["violations"] is None  # not scored, so not decided either
    assert "scored 0 responses, 3 failed" in result.stderr
    assert result.stderr.count("not scored") == 3 and f"{source}:1: ScoringTimeout" in result.stderr


def test_score_on_error_skip_leaves_failed_rows_out(tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [json.dumps(r) for r in GOOD_ROWS])
    target = tmp_path / "out.jsonl"
    result = expect(invoke("score", str(source), str(target), "--timeout-ms", "0.001", "--on-error", "skip"), 0)
    assert _read_jsonl(target) == []
    assert "scored 0 responses, 3 failed (skipped), wrote 0" in result.stderr


def test_score_gives_each_batch_its_own_deadline(tmp_path: Path) -> None:
    source = _write_jsonl(tmp_path / "in.jsonl", [json.dumps(r) for r in GOOD_ROWS])
    target = tmp_path / "out.jsonl"
    policy = str(_tight_policy(tmp_path))
    result = expect(invoke("score", str(source), str(target), "--policy", policy, "--timeout-ms", "60000"), 0)
    rows = _read_jsonl(target)
    assert all(r["error"] is None and list(r["scores"]) == list(VALUES) for r in rows)
    assert [r["decision"] for r in rows] == ["allow", "block", "allow"]
    assert "scored 3 responses, 0 failed" in result.stderr


def test_score_missing_input(tmp_path: Path) -> None:
    result = expect(invoke("score", str(tmp_path / "nope.jsonl"), str(tmp_path / "out.jsonl")), 2)
    assert "nope.jsonl" in result.stderr


# -- demo, train, eval ---------------------------------------------------------------------


# Scripted turns the shipped model decides against the script (docs/model-card.md: known misses). Strict: when a better
# model gets one right, this test fails until the turn is taken off the list.
DEMO_KNOWN_MISSES = {
    "Can you help me write a thank-you note to my neighbour?",  # blocked: universalism below its floor
    "I feel so lonely lately. Any advice?",  # allowed: the cruel sentence after the kind opening is missed
}


def test_demo() -> None:
    """Every scripted answer is decided as the script says (known misses apart), and the table shows it."""
    from guardrail import Guard
    from guardrail._demo import SCRIPT

    verdicts = Guard().check_many([t.response for t in SCRIPT], [t.prompt for t in SCRIPT])
    decided = {t.prompt: v.decision for t, v in zip(SCRIPT, verdicts)}
    wrong = {t.prompt for t in SCRIPT if decided[t.prompt] != t.expected}
    assert wrong == DEMO_KNOWN_MISSES, decided
    stdout = expect(invoke("demo"), 0).stdout
    stopped = sum(not v.allowed for v in verdicts)
    assert f"{len(SCRIPT)} responses, {stopped} stopped" in stdout
    assert stdout.count("block") >= stopped and "allow" in stdout


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A tiny model trained by ``guardrail train`` (smoke-sized: --limit 16)."""
    output = tmp_path_factory.mktemp("model")
    args = ["--data", str(data_dir), "--limit", "16", "--epochs", "2", "--finetune-epochs", "1", "--skip-eval"]
    args += ["--touche", "--written"]  # every source, so the card lists them all
    args += ["--validation", "0.2"]  # and a validation split, so the card measures it
    result = expect(invoke("train", *args, "-o", str(output)), 0)
    assert f"wrote {output}" in result.stdout
    return output


def test_train_writes_model_dir(trained: Path) -> None:
    from guardrail._training.data import HARM_SOURCES

    for name in ("config.json", "head.safetensors", "adapter.safetensors", "card.json"):
        assert (trained / name).is_file(), name
    card = json.loads((trained / "card.json").read_text(encoding="utf-8"))
    files = card["data"]["files"]
    # FULCRA (3 evaluator files, trustworthy), Touché23 (2), harm (4), written (2)
    assert len(files) == 12 and all(len(h) == 64 for h in files.values())
    assert {"guardrail/data/written_benign.jsonl", "guardrail/data/written_harmful.jsonl"} <= set(files)
    assert {f"harm/{source}.jsonl" for source in HARM_SOURCES} <= set(files)
    assert card["split_rule"].startswith("test = int(sha1(")
    assert card["hyperparameters"]["limit"] == 16
    assert card["hyperparameters"]["epochs"] == 2
    assert card["hyperparameters"]["harm"] is True
    counts = card["data"]["train_examples"]
    # --validation holds out FULCRA prompts only: the first 16 rows of each source, less those.
    assert 0 < counts.pop("evaluator_scores") < 16 and 0 < counts.pop("trustworthy") <= 16
    # Harm rows: the first 16 of each file, less those held out for calibration and validation.
    harm = {source: counts.pop(f"harm_{source}") for source in HARM_SOURCES}
    assert all(0 < n <= 16 for n in harm.values()), harm
    assert sum(harm.values()) + card["data"]["harm_held_out"] == 4 * 16
    assert counts.pop("harm_two_part") == 2 * 16  # --limit caps the two-part answers: 16 harmful, 16 harmless
    assert counts == {"touche23": 16, "written": 16, "written_two_part": 16}
    assert card["hyperparameters"]["validation"] == 0.2
    assert card["validation_rule"].startswith('validation = int(sha1(("validation:" + prompt')
    held_out = card["validation_metrics"]
    assert set(held_out) >= {"pearson_mean_safety", "auroc_opposed", "allow_rate_clean", "harm"}
    assert "pooled" in held_out["harm"] and set(held_out["harm"]) <= {"pooled", *HARM_SOURCES}
    assert held_out["harm"]["pooled"]["n"] == card["data"]["harm_held_out"]
    calibration = card["calibration"]
    assert set(calibration["floors"]) == {"security", "conformity", "benevolence", "universalism"}
    assert calibration["target"] == {"fulcra_clean_blocked_max": 0.02, "harm_harmless_blocked_max": 0.05}
    assert calibration["harm_validation"]["n"] == card["data"]["harm_held_out"]
    assert "metrics" not in card  # --skip-eval
    text = expect(invoke("model-card", "--model", str(trained)), 0).stdout
    assert "a hinge loss on the harm data's labels" in text
    assert "harm data (" in text and "Target: at most 0.020 of clean FULCRA training answers blocked" in text
    assert "GPTFuzz is MIT, DiaSafety is Apache-2.0" in text


def test_trained_model_loads(trained: Path) -> None:
    data = check_json("--model", str(trained), HATEFUL)
    assert data["decision"] in ("allow", "block")  # a 32-example model: only that it runs
    assert list(data["scores"]) == list(VALUES)


def test_trained_model_scores_spans_alike_in_torch_and_onnx(
    trained: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training writes span scoring into the model; the exported ONNX graph pools spans as PyTorch does."""
    from guardrail import TransformerScorer

    config = json.loads((trained / "config.json").read_text(encoding="utf-8"))
    assert (config["span_tokens"], config["span_stride"]) == (32, 16)
    monkeypatch.setenv("GUARDRAIL_CACHE_DIR", str(tmp_path))
    items = [("How do I settle in?", "Visit the parks and meet the neighbours. " * 20 + HATEFUL), (None, "Thanks!")]
    torch_scores = TransformerScorer(trained, runtime="torch", device="cpu").score(items)
    onnx_scores = TransformerScorer(trained, runtime="onnx", device="cpu").score(items)
    for a, b in zip(torch_scores, onnx_scores):
        assert max(abs(x - y) for x, y in zip(a.to_list(), b.to_list())) < 1e-4
    # The spans decide some of these scores: the same weights scoring windows only differ.
    windows_only = tmp_path / "windows-only"
    shutil.copytree(trained, windows_only)
    (windows_only / "config.json").write_text(json.dumps({**config, "span_tokens": 0, "span_stride": 0}))
    plain = TransformerScorer(windows_only, runtime="torch", device="cpu").score(items[:1])[0]
    assert plain.to_list() != torch_scores[0].to_list()


def test_train_missing_data() -> None:
    result = expect(invoke("train", "--data", "/nonexistent", "--limit", "16", "-o", "/nonexistent/out"), 2)
    assert "/nonexistent/fulcra" in result.stderr


def test_eval_missing_data() -> None:
    result = expect(invoke("eval", "--data", "/nonexistent"), 2)
    assert "/nonexistent/fulcra" in result.stderr


def test_model_card_shows_metrics_weak_spots_and_licence() -> None:
    from guardrail._resources import default_model_dir

    card = json.loads((default_model_dir() / "card.json").read_text(encoding="utf-8"))
    text = expect(invoke("model-card"), 0).stdout
    metrics = card["metrics"]
    assert f"**{metrics['pearson_mean_safety']:.3f}**" in text
    assert f"| {metrics['auroc_opposed']:.3f} |" in text
    assert "Weak spots" in text and "CC BY-NC 4.0" in text
    assert card["split_rule"] in text
    if "harm" in metrics:  # models trained since the harm data came in
        assert "AUROC of the L1 safety risk" in text
        pooled = metrics["harm"]["pooled"]
        assert f"| **pooled** | **{pooled['n']:,} ({pooled['harmful']:,})** | **{pooled['auroc']:.3f}** |" in text
    assert json.loads(expect(invoke("model-card", "--json"), 0).stdout) == card


def test_docs_carry_the_shipped_model_card() -> None:
    """docs/model-card.md carries `guardrail model-card` of the shipped model, verbatim."""
    card = (Path(__file__).parent.parent / "docs" / "model-card.md").read_text(encoding="utf-8")
    assert expect(invoke("model-card"), 0).stdout in card


def test_model_card_missing_dir(tmp_path: Path) -> None:
    result = expect(invoke("model-card", "--model", str(tmp_path / "nope")), 2)
    assert "no such model directory" in result.stderr
    result = expect(invoke("model-card", "--model", str(tmp_path)), 2)
    assert "no card.json" in result.stderr


def test_calibrate_rewrites_the_card(trained: Path, data_dir: Path) -> None:
    # --no-harm keeps this smoke run short; training with harm rows calibrates on them (test above).
    result = expect(invoke("calibrate", "--data", str(data_dir), "--model", str(trained), "--no-harm"), 0)
    assert f"recalibrated {trained}" in result.stdout
    card = json.loads((trained / "card.json").read_text(encoding="utf-8"))
    assert all(f <= -0.3 for f in card["calibration"]["floors"].values())  # never inside "no connection"
    assert set(card["metrics"]) >= {"pearson", "auroc_opposed", "allow_rate_clean", "block_rate_opposed"}
    assert "harm" not in card["metrics"] and card["data"]["harm_held_out"] == 0
    # Trained with --validation: calibrated without the held-out prompts, which are measured again.
    assert card["validation_metrics"]["n"]["evaluator_scores"] > 500
    text = expect(invoke("model-card", "--model", str(trained)), 0).stdout
    assert "**Validation split** (held out of training and calibration" in text
    assert f"r {card['validation_metrics']['pearson_mean_safety']:.3f} (4 safety values)" in text


def test_calibrate_needs_a_model_dir(tmp_path: Path) -> None:
    result = expect(invoke("calibrate", "--model", str(tmp_path)), 2)
    assert "not a model directory" in result.stderr


def test_train_help_shows_the_training_defaults() -> None:
    # The defaults live in TrainConfig; --help shows them rather than naming the class.
    wide = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "240"})  # one line per option
    text = expect(wide, 0).stdout
    defaults = TrainConfig()
    for option, value in (("finetune-epochs", defaults.finetune_epochs), ("adapter-rank", defaults.adapter_rank),
                          ("harm-margin", defaults.harm_margin), ("span-tokens", defaults.span_tokens)):  # fmt: skip
        line = next(row for row in text.splitlines() if f"--{option} " in row)
        assert f"[default: ({value})]" in line, line
    assert "TrainConfig" not in text


def test_the_command_starts_without_the_training_code() -> None:
    # Building every command (what each `guardrail ...` start does) needs TrainConfig's defaults only.
    probe = (
        "import sys, typer.main; from guardrail._cli import app; typer.main.get_command(app);"
        "print(sorted(m for m in ('guardrail._training.train', 'torch') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"
