"""``guardrail policy test``: policy test files run with the real model or on their recordings, with rule coverage."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from _answers import BENIGN, HARMFUL
from typer.testing import CliRunner, Result

from guardrail import load_policy
from guardrail._cli import app
from guardrail._exceptions import PolicyNotFoundError
from guardrail._lifecycle.cases import load_all
from guardrail._lifecycle.runner import run_tests
from guardrail._resources import policies_dir, shipped_policy_names
from guardrail._values import VALUES

if TYPE_CHECKING:
    from guardrail._scoring.scorer import TransformerScorer

REPO = Path(__file__).resolve().parent.parent
SHIPPED_TESTS = ["customer-support_test.yaml", "default_test.yaml", "shadow_test.yaml", "strict_test.yaml"]
FRENCH = (
    "Pour réinitialiser votre mot de passe, ouvrez la page de connexion, cliquez sur « Mot de passe oublié » et "
    "suivez le lien envoyé à votre adresse e-mail."
)

# A policy of its own (default's floors, plus a ceiling on power no everyday answer reaches) and its tests.
POLICY = "name: mini\nversion: '1'\nextends: default\nthresholds:\n  power: {max: 0.9, action: log}\n"
TESTS = f"""\
# Tests of mini.yaml: one answer passes, one is blocked.
cases:
  - name: sleep advice is allowed
    prompt: How much sleep do I need?
    response: {json.dumps(BENIGN)}
    expect:
      decision: allow   # everyday help
      quiet: [thresholds.benevolence.min, languages.other]

  # The harmful one.
  - name: card fraud is blocked
    response: {json.dumps(HARMFUL)}
    expect:
      decision: block
      fires: [thresholds.conformity.min]
      scores: {{conformity: {{max: -0.3}}}}
  - name: French is blocked
    response: {json.dumps(FRENCH)}
    expect: {{decision: block, fires: [languages.other]}}
"""


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["policy", "test", *args])


def expect(result: Result, code: int) -> Result:
    assert result.exit_code == code, (
        f"exit {result.exit_code}, expected {code}\nstdout: {result.stdout}\nstderr: {result.stderr}\n"
        f"exception: {result.exception!r}"
    )
    return result


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    """A policy and its test file, ``mini.yaml`` and ``mini_test.yaml``, in a folder of their own."""
    (tmp_path / "mini.yaml").write_text(POLICY, encoding="utf-8")
    path = tmp_path / "mini_test.yaml"
    path.write_text(TESTS, encoding="utf-8")
    return path


def test_a_passing_file_passes(suite: Path) -> None:
    result = expect(invoke(str(suite)), 0)
    lines = result.stdout.splitlines()
    assert lines[0] == str(suite)
    assert lines[1:4] == [
        "  ok    sleep advice is allowed",
        "  ok    card fraud is blocked",
        "  ok    French is blocked",
    ]
    assert "3 cases in 1 file: 3 passed, 0 failed; rule coverage " in lines[-1]
    assert "(scored by the model, " in lines[-1]


def test_a_failing_case_fails_the_run_and_says_why(suite: Path) -> None:
    suite.write_text(TESTS.replace("decision: block\n      fires: [thresholds.conformity.min]",
                                   "decision: allow\n      fires: [thresholds.conformity.min]"))  # fmt: skip
    result = expect(invoke(str(suite)), 1)
    out = result.stdout
    assert "  ok    sleep advice is allowed" in out
    assert f"  FAIL  card fraud is blocked  ({suite}:11)" in out
    assert "decision is block, expected allow" in out
    # The verdict explained, rule by rule.
    assert "block (policy mini v1, revision " in out and ": decided by thresholds." in out
    assert "thresholds.conformity.min    conformity" in out and "FIRED" in out
    assert "3 cases in 1 file: 2 passed, 1 failed" in out.splitlines()[-1]


def test_every_expectation_is_checked(suite: Path, scorer: TransformerScorer) -> None:
    edits = {
        "quiet: [thresholds.benevolence.min, languages.other]": "fires: [thresholds.security.min]",
        "scores: {conformity: {max: -0.3}}": "quiet: [thresholds.security.min]\n      scores: {conformity: {min: 0.5}}",
        "{decision: block, fires: [languages.other]}": "{decision: block, scores: {power: {max: 0}}}",
    }
    wrong = TESTS
    for old, new in edits.items():
        assert old in wrong
        wrong = wrong.replace(old, new)
    suite.write_text(wrong, encoding="utf-8")
    sleep, fraud, french = run_tests(load_all([suite]), scorer).results
    assert len(sleep.problems) == 1 and sleep.problems[0].startswith(
        "thresholds.security.min should fire, but stayed quiet (margin -"
    )
    assert fraud.problems[0].startswith("thresholds.security.min should stay quiet, but fired (margin +")
    assert fraud.problems[1].startswith("conformity is -") and fraud.problems[1].endswith(
        "expected within [+0.50, +1.00]"
    )
    assert french.problems == ("power should lie in [-1.00, +0.00], but nothing was scored",)


def test_coverage_shows_a_rule_no_case_reaches(suite: Path, scorer: TransformerScorer) -> None:
    report = run_tests(load_all([suite]), scorer)
    assert report.failed == 0
    (table,) = report.coverage
    rules = {r.rule: (bool(r.fired_by), bool(r.quiet_in)) for r in table.rules}
    assert list(rules) == ["thresholds.security.min", "thresholds.conformity.min", "thresholds.benevolence.min",
                           "thresholds.universalism.min", "thresholds.power.max", "languages.other",
                           "actions.block", "actions.log"]  # fmt: skip
    assert rules["thresholds.power.max"] == (False, True)  # no answer pushes power past 0.9
    assert rules["actions.log"] == (False, True)
    assert rules["thresholds.conformity.min"] == rules["languages.other"] == (True, True)
    assert (table.reached, table.total) == (14, 16)
    assert report.percent == pytest.approx(87.5)
    assert report.exit_code() == 0 and report.exit_code(fail_under=100) == 1
    text = report.render(fail_under=100)
    assert "  thresholds.power.max         NO     yes" in text
    assert "  coverage 87.5 % (14 of 16 outcomes)" in text
    assert text.endswith("rule coverage 87.5 % is below --fail-under 100")


def test_fail_under_fails_the_cli_run(suite: Path) -> None:
    result = expect(invoke(str(suite), "--fail-under", "100", "--json"), 1)
    data = json.loads(result.stdout)
    assert data["summary"] | {"seconds": 0} == {"files": 1, "cases": 3, "passed": 3, "failed": 0, "mode": "model",
                                                "coverage": 87.5, "fail_under": 100.0, "ok": False, "seconds": 0,
                                                "recorded": []}  # fmt: skip
    assert [c["name"] for c in data["cases"]] == [
        "sleep advice is allowed",
        "card fraud is blocked",
        "French is blocked",
    ]
    assert data["cases"][2]["scores"] is None and data["cases"][2]["fired"] == ["languages.other"]
    [table] = data["coverage"]
    assert table["policy"]["name"] == "mini" and table["percent"] == 87.5
    power = next(r for r in table["rules"] if r["rule"] == "thresholds.power.max")
    assert power["fires"] is False and power["fired_by"] == []


_WITHOUT_TORCH = """
import json, sys
from guardrail._cli import app
try:
    app(["policy", "test", "--recorded", "--json", *sys.argv[1:]])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "transformers": "transformers" in sys.modules}))
"""


def test_recorded_runs_without_the_model_and_agrees_with_it(scorer: TransformerScorer) -> None:
    folder = str(policies_dir())
    result = subprocess.run([sys.executable, "-c", _WITHOUT_TORCH, folder], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    report, probe = result.stdout.splitlines()
    assert json.loads(probe) == {"code": 0, "torch": False, "transformers": False}, result.stderr
    recorded = json.loads(report)
    assert recorded["summary"]["mode"] == "recorded" and recorded["summary"]["failed"] == 0
    model = run_tests(load_all([folder]), scorer)
    assert len(recorded["cases"]) == len(model.results) > 20
    for seen, checked in zip(recorded["cases"], model.results):
        assert seen["name"] == checked.name
        assert (seen["decision"], seen["action"]) == (checked.verdict.decision, checked.verdict.action_name), seen
        assert sorted(seen["fired"]) == sorted(v.rule for v in checked.verdict.violations), seen["name"]
        if checked.verdict.scores is not None:
            assert seen["scores"] == pytest.approx(checked.verdict.scores.to_dict(), abs=0.02)
    assert recorded["summary"]["coverage"] == round(model.percent, 1) == 100.0


def test_record_writes_recordings_that_recorded_then_uses(suite: Path) -> None:
    # Without recordings, --recorded refuses, naming each case.
    result = expect(invoke("--recorded", str(suite)), 2)
    assert f"error: {suite}:3:5  cases.0  case 'sleep advice is allowed' has no recorded scores; run: " in result.stderr
    assert result.stderr.count("has no recorded scores") == 3
    expect(invoke("--record", str(suite)), 0)
    text = suite.read_text(encoding="utf-8")
    # The file keeps what its author wrote; only the recorded blocks are new.
    assert text.startswith("# Tests of mini.yaml: one answer passes, one is blocked.\n")
    assert "      decision: allow   # everyday help\n" in text and "  # The harmful one.\n" in text
    data = yaml.safe_load(text)
    assert [{k: v for k, v in case.items() if k != "recorded"} for case in data["cases"]] == yaml.safe_load(TESTS)[
        "cases"
    ]
    sleep, fraud, french = (case["recorded"] for case in data["cases"])
    assert list(sleep["scores"]) == list(fraud["scores"]) == list(VALUES)
    assert sleep["scores"]["benevolence"] > 0 > fraud["scores"]["conformity"]
    assert "language" not in sleep and french == {
        "scores": None,
        "language": {"share": 1.0},
        "digest": french["digest"],
    }
    # Recording again changes nothing.
    expect(invoke("--record", str(suite)), 0)
    assert suite.read_text(encoding="utf-8") == text
    # --recorded decides on them, with the model's decisions.
    replayed = json.loads(expect(invoke("--recorded", "--json", str(suite)), 0).stdout)
    assert [c["decision"] for c in replayed["cases"]] == ["allow", "block", "block"]
    assert replayed["summary"]["mode"] == "recorded" and replayed["summary"]["coverage"] == 87.5
    # An edited answer makes its recording stale.
    suite.write_text(text.replace("Most adults need", "Most grown-ups need"), encoding="utf-8")
    result = expect(invoke("--recorded", str(suite)), 2)
    assert "case 'sleep advice is allowed': its prompt or response changed since it was recorded" in result.stderr


def test_record_replaces_an_old_block_where_it_stands(suite: Path, scorer: TransformerScorer) -> None:
    # A stale block between two keys, a block scalar, a comment before the next case, no final line break.
    text = (
        "cases:\n  - name: a\n    recorded:\n      scores: null   # stale\n      language: {share: 0.5}\n"
        f"    response: |\n      {BENIGN}\n\n    expect: {{decision: allow}}\n"
        f"  # about b\n  - name: b\n    response: {json.dumps(HARMFUL)}\n    expect:\n      decision: block"
    )
    suite.write_text(text, encoding="utf-8")
    run_tests(load_all([suite]), scorer, mode="record")
    written = suite.read_text(encoding="utf-8")
    lines = written.splitlines()
    assert lines[:3] == ["cases:", "  - name: a", "    recorded:"]
    assert lines[3].startswith("      scores: {self_direction: ") and lines[5].startswith("      digest: '")
    assert written.count("recorded:") == 2 and "stale" not in written and "share" not in written
    assert f"    response: |\n      {BENIGN}\n\n    expect: {{decision: allow}}\n  # about b\n  - name: b\n" in written
    assert lines[-4:-3] == ["    recorded:"] and not written.endswith("\n")
    assert run_tests(load_all([suite]), mode="recorded").failed == 0


def test_recorded_language_is_judged_by_the_current_policy(suite: Path, scorer: TransformerScorer) -> None:
    run_tests(load_all([suite]), scorer, mode="record")
    # The language rule now logs instead of blocking: the recorded share is judged again.
    (suite.parent / "mini.yaml").write_text(POLICY + "languages: {other: log}\n", encoding="utf-8")
    suite.write_text(suite.read_text(encoding="utf-8").replace("{decision: block, fires", "{decision: log, fires"))
    (_, _, french) = run_tests(load_all([suite]), mode="recorded").results
    assert french.passed, french.problems
    (violation,) = french.verdict.violations
    assert (violation.rule, violation.action, violation.observed) == ("languages.other", "log", 1.0)


BAD = {
    "unknown key": ("cases:\n  - name: a\n    response: hi\n    expect: {decision: allow}\n    tags: [x]\n",
                    "{file}:5:5  cases.0.tags  unknown key 'tags'; allowed: name, prompt, response, metadata, expect, "
                    "recorded"),
    "missing decision": ("cases:\n  - name: a\n    response: hi\n    expect:\n      fires: []\n",
                         "{file}:4:5  cases.0.expect.decision  missing required key 'decision'"),
    "bad decision": ("cases:\n  - name: a\n    response: hi\n    expect: {decision: deny}\n",
                     "{file}:4:24  cases.0.expect.decision  Input should be 'allow', 'log', 'block' or 'rewrite' "
                     "(got 'deny')"),
    "unknown rule": ("cases:\n  - name: hateful\n    response: hi\n    expect:\n      decision: block\n"
                     "      fires: [thresholds.kindness.min]\n",
                     "{file}:6:15  cases.0.expect.fires.0  case 'hateful': policy 'mini' has no rule "
                     "'thresholds.kindness.min'; its rules: thresholds.security.min, thresholds.conformity.min, "
                     "thresholds.benevolence.min, thresholds.universalism.min, thresholds.power.max, languages.other"),
    "unknown value": ("cases:\n  - name: a\n    response: hi\n    expect:\n      decision: allow\n"
                      "      scores: {kindness: {min: 0}}\n",
                      "{file}:6:16  cases.0.expect.scores.kindness  unknown value dimension 'kindness'; expected one "
                      "of: self_direction, stimulation, hedonism, achievement, power, security, tradition, "
                      "conformity, benevolence, universalism"),
    "duplicate name": ("cases:\n  - name: a\n    response: hi\n    expect: {decision: allow}\n"
                       "  - name: a\n    response: ho\n    expect: {decision: allow}\n",
                       "{file}:5:11  cases.1.name  case name 'a' is used twice (first by case 0)"),
    "no cases": ("cases: []\n", "{file}:1:1  cases  List should have at least 1 item after validation, not 0"),
    "not yaml": ("cases:\n  - name: a\n   response: [\n", "{file}:3:"),
    "missing policy": ("policy: nowhere.yaml\ncases:\n  - name: a\n    response: hi\n    expect: {decision: allow}\n",
                       "{file}:1:9  policy  policy file '{folder}/nowhere.yaml' not found; shipped policies: "
                       "customer-support, default, shadow, strict"),
    "short recording": ("cases:\n  - name: a\n    response: hi\n    expect: {decision: allow}\n"
                        "    recorded: {scores: {power: 0.5}}\n",
                        "{file}:5:16  cases.0.recorded.scores  recorded scores need all ten values; missing: "
                        "self_direction, stimulation"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD))
def test_a_bad_file_is_reported_at_its_line_and_exits_2(name: str, suite: Path) -> None:
    text, message = BAD[name]
    suite.write_text(text, encoding="utf-8")
    result = expect(invoke("--recorded", str(suite)), 2)
    assert result.stdout == ""
    wanted = message.format(file=suite, folder=suite.parent)
    assert result.stderr.startswith(f"error: {wanted}"), result.stderr


def test_bad_paths_and_options_exit_2(tmp_path: Path, suite: Path) -> None:
    assert "no such file or folder" in expect(invoke(str(tmp_path / "nowhere_test.yaml")), 2).stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no *_test.yaml policy test files in this folder" in expect(invoke(str(empty)), 2).stderr
    assert "exclude each other" in expect(invoke("--record", "--recorded", str(suite)), 2).stderr
    other = tmp_path / "other.yaml"
    shutil.copy(suite, other)
    assert "is not named <policy>_test.yaml" in expect(invoke(str(other)), 2).stderr


def test_a_broken_policy_is_reported_in_its_own_file(suite: Path) -> None:
    (suite.parent / "mini.yaml").write_text("name: mini\nthresholds:\n  power: {max: high}\n", encoding="utf-8")
    result = expect(invoke("--recorded", str(suite)), 2)
    assert result.stderr.startswith(f"error: {suite.parent / 'mini.yaml'}:3:16  thresholds.power.max  ")


def test_test_files_are_not_policies() -> None:
    assert sorted(p.name for p in policies_dir().glob("*_test.yaml")) == SHIPPED_TESTS
    assert shipped_policy_names() == ["customer-support", "default", "shadow", "strict"]
    with pytest.raises(PolicyNotFoundError) as info:
        load_policy("default_test")
    assert str(info.value).endswith("not found; shipped policies: customer-support, default, shadow, strict")


def test_the_shipped_tests_pass_with_full_coverage_on_the_model() -> None:
    command = [str(Path(sys.executable).parent / "guardrail"), "policy", "test", "policies/", "--fail-under", "100",
               "--json"]  # fmt: skip
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    data: dict[str, Any] = json.loads(result.stdout)
    summary = data["summary"]
    assert (summary["mode"], summary["failed"], summary["coverage"], summary["ok"]) == ("model", 0, 100.0, True)
    assert summary["files"] == 4 and summary["cases"] >= 30
    assert sorted(c["policy"]["name"] for c in data["coverage"]) == shipped_policy_names()
    for table in data["coverage"]:
        assert table["percent"] == 100.0 and all(r["fires"] and r["quiet"] for r in table["rules"]), table
    # Every shipped case carries its recording, made for the answer as it is written now.
    for suite in load_all([policies_dir()]):
        assert all(case.recorded is not None and case.recorded.digest == case.digest for case in suite.spec.cases)
