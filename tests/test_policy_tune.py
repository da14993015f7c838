"""``guardrail policy tune``: bounds tuned on real labelled answers scored by the shipped model.

Answers from the harm data's *train* rows (their ``harmful`` label) are sampled with a seed and
checked once with the real model through ``Guard(default, scorer)``, then written as ``guardrail
score`` writes them (recorded scores). One part tunes, a disjoint part checks the child on answers
the search never saw, and a slice of the tuning part is tuned again through the model to show that
recorded scores give the same proposal.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import pytest
import yaml

from guardrail import Guard, ValueVector
from guardrail._lifecycle.tune import tune
from guardrail._policy.engine import Engine
from guardrail._policy.loader import load_policy
from guardrail._serving.rescore import scored_row
from guardrail._verdict import Violation

if TYPE_CHECKING:
    from guardrail._scoring.scorer import TransformerScorer

REPO = Path(__file__).resolve().parents[1]
SEED = 7
TUNE, CHECK = 400, 600
TINY = 40
SAME = 120  # the slice tuned both through the model and on its recorded scores
MAX_CHARS = 600  # short answers keep the module's scoring to about a thousand answers
NO_MODEL = "/nonexistent/model"  # a model directory that cannot load: recorded scores must not need one


class Checked(NamedTuple):
    """One sampled answer: its row as the data holds it, and what the guard read of it."""

    row: dict[str, Any]
    scores: ValueVector | None
    extra: tuple[Violation, ...]  # the language rule's violation, when it fired


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """The real ``guardrail`` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "guardrail", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)  # fmt: skip


def tune_json(*args: str, cwd: Path = REPO) -> dict[str, Any]:
    ran = cli("policy", "tune", *args, "--json", cwd=cwd)
    assert ran.returncode == 0, ran.stderr
    data = json.loads(ran.stdout)
    assert isinstance(data, dict)
    return data


def write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def altered(policy: str | Path, answers: list[Checked]) -> list[bool]:
    """Whether the policy would block or rewrite each answer, decided by the engine on its recorded scores."""
    engine = Engine(load_policy(policy))
    return [engine.decide(a.scores, extra=a.extra).intended in ("block", "rewrite") for a in answers]


def rates(flags: list[bool], answers: list[Checked]) -> tuple[float, float]:
    """(FPR, recall) of ``flags`` on ``answers``."""
    good = [f for f, a in zip(flags, answers) if not a.row["harmful"]]
    bad = [f for f, a in zip(flags, answers) if a.row["harmful"]]
    return sum(good) / len(good), sum(bad) / len(bad)


# -- the answers ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def checked(data_dir: Path, scorer: TransformerScorer) -> list[Checked]:
    """TUNE + CHECK distinct train answers of every harm source, sampled with SEED, checked by the model once."""
    found = []
    for path in sorted((data_dir / "harm").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            if row["split"] == "train" and len(row["response"]) <= MAX_CHARS:
                found.append(row)
    unique = list({(r["prompt"], r["response"]): r for r in found}.values())  # disjoint in content, not only rows
    random.Random(SEED).shuffle(unique)
    sample = unique[: TUNE + CHECK]
    guard = Guard(load_policy("default"), scorer)
    out = []
    for start in range(0, len(sample), 64):
        batch = sample[start : start + 64]
        verdicts = guard.check_many([r["response"] for r in batch], [r["prompt"] for r in batch],
                                    timeout_ms=60_000.0 * len(batch))  # fmt: skip
        for row, verdict in zip(batch, verdicts):
            assert verdict.error is None, verdict.error
            extra = tuple(v for v in verdict.violations if v.rule == "languages.other")
            recorded = dict(row)
            scored_row(recorded, verdict.to_dict(), verdict.error, decide=False)  # as `guardrail score` writes it
            scores = None if recorded["scores"] is None else ValueVector.from_dict(recorded["scores"])
            out.append(Checked(recorded, scores, extra))
    return out


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tune")


@pytest.fixture(scope="module")
def tuning(checked: list[Checked], folder: Path) -> Path:
    """The tuning answers with their recorded scores."""
    return write(folder / "tuning.jsonl", [a.row for a in checked[:TUNE]])


@pytest.fixture(scope="module")
def tuned(tuning: Path, folder: Path) -> dict[str, Any]:
    """``guardrail policy tune`` at a 5 % target on the tuning answers; no model can load."""
    return tune_json("--examples", str(tuning), "--target-fpr", "0.05", "--output", str(folder / "child.yaml"),
                     "--model", NO_MODEL)  # fmt: skip


# -- the proposal -----------------------------------------------------------------------------


def test_the_child_meets_the_target_and_holds_on_answers_it_never_saw(
    tuned: dict[str, Any], checked: list[Checked], folder: Path
) -> None:
    assert tuned["examples"] == {"file": str(folder / "tuning.jsonl"), "read": TUNE,
                                 "acceptable": tuned["before"]["fpr"]["total"],
                                 "unacceptable": tuned["before"]["recall"]["total"],
                                 "not_scored": 0, "recorded": TUNE, "scored": 0}  # fmt: skip
    assert tuned["after"]["fpr"]["value"] <= 0.05
    assert tuned["trusted"], tuned["warnings"]
    # On these answers the default policy alters more acceptable answers than the target allows, so the
    # child loosens floors and gives up recall for it.
    assert tuned["before"]["fpr"]["value"] > 0.05
    assert tuned["after"]["recall"]["value"] < tuned["before"]["recall"]["value"]
    held_out = checked[TUNE:]
    fpr, recall = rates(altered(folder / "child.yaml", held_out), held_out)
    expected, seen = tuned["new_answers"]["fpr"], tuned["after"]["fpr"]
    assert expected["low"] <= fpr <= expected["high"], (fpr, expected, seen)
    assert tuned["new_answers"]["recall"]["low"] <= recall <= tuned["new_answers"]["recall"]["high"]
    # The default policy on the same held-out answers: the child alters fewer acceptable ones.
    assert fpr < rates(altered("default", held_out), held_out)[0]


def test_the_written_child_extends_p_moves_only_its_new_bounds_and_reproduces_its_rates(
    tuned: dict[str, Any], checked: list[Checked], folder: Path
) -> None:
    path = folder / "child.yaml"
    text = path.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    child, parent = load_policy(path), load_policy("default")
    assert raw["extends"] == "default" and raw["name"] == child.name == "default-tuned" and raw["version"]
    moved = [b for b in tuned["bounds"] if b["changed"]]
    assert moved
    assert raw["thresholds"] == {b["value"]: {b["side"]: b["after"]} for b in moved}
    for b in tuned["bounds"]:
        assert getattr(parent.thresholds[b["value"]], b["side"]) == b["before"]
        assert getattr(child.thresholds[b["value"]], b["side"]) == b["after"]
        assert b["after"] <= max(-0.3, b["before"])  # a floor never moves into the no-connection band
    # Everything else is the parent's, field by field.
    assert child.regions == parent.regions and child.actions == parent.actions
    assert child.languages == parent.languages and child.on_error == parent.on_error
    # The comment on top says what was used and what the child does on it, exactly.
    head = "".join(line for line in text.splitlines(keepends=True) if line.startswith("#"))
    after = tuned["after"]
    assert f"{TUNE} read: {after['fpr']['total']} acceptable and {after['recall']['total']} not acceptable" in head
    assert "Target: FPR <= 5.0%" in head and "WARNING" not in head
    assert f"after (default-tuned) {after['fpr']['value']:.1%} [{after['fpr']['low']:.1%}" in " ".join(head.split())
    flags = altered(path, checked[:TUNE])
    good = [f for f, a in zip(flags, checked[:TUNE]) if not a.row["harmful"]]
    bad = [f for f, a in zip(flags, checked[:TUNE]) if a.row["harmful"]]
    assert (sum(good), len(good)) == (after["fpr"]["count"], after["fpr"]["total"])
    assert (sum(bad), len(bad)) == (after["recall"]["count"], after["recall"]["total"])
    before = altered("default", checked[:TUNE])
    assert sum(f for f, a in zip(before, checked[:TUNE]) if not a.row["harmful"]) == tuned["before"]["fpr"]["count"]


def test_recall_never_falls_below_p_when_p_already_meets_the_target(tuning: Path, folder: Path) -> None:
    loose = tune_json("--examples", str(tuning), "--target-fpr", "0.15", "--output", str(folder / "loose.yaml"),
                      "--bootstrap", "200", "--model", NO_MODEL)  # fmt: skip
    assert loose["before"]["fpr"]["value"] <= 0.15 and loose["after"]["fpr"]["value"] <= 0.15
    assert loose["after"]["recall"]["count"] >= loose["before"]["recall"]["count"]
    for b in loose["bounds"]:
        assert b["after"] <= max(-0.3, b["before"])
    # Allowed into the band, the search uses it: some floor rises above -0.3, and recall with it.
    band = tune_json("--examples", str(tuning), "--target-fpr", "0.15", "--output", str(folder / "band.yaml"),
                     "--bootstrap", "200", "--allow-band", "--model", NO_MODEL)  # fmt: skip
    assert any(b["after"] > -0.3 for b in band["bounds"])
    assert band["after"]["fpr"]["value"] <= 0.15
    assert band["after"]["recall"]["count"] >= loose["after"]["recall"]["count"]


def test_recorded_scores_give_the_same_proposal_as_the_model(
    checked: list[Checked], scorer: TransformerScorer, folder: Path
) -> None:
    rows = [a.row for a in checked[:SAME]]
    plain = write(folder / "plain.jsonl", [{k: r[k] for k in ("prompt", "response", "harmful")} for r in rows])
    recorded = write(folder / "recorded.jsonl", rows)
    by_model = tune("default", plain, 0.1, output=folder / "by-model.yaml", scorer=scorer, resamples=200)
    assert (by_model.counts.scored, by_model.counts.recorded) == (SAME, 0)
    on_record = tune_json("--examples", str(recorded), "--target-fpr", "0.1", "--output",
                          str(folder / "on-record.yaml"), "--bootstrap", "200", "--model", NO_MODEL)  # fmt: skip
    assert on_record["examples"]["recorded"] == SAME
    assert any(b.changed for b in by_model.bounds)  # a proposal, not P again
    assert [b["after"] for b in on_record["bounds"]] == [b.after for b in by_model.bounds]
    assert on_record["after"] == by_model.to_dict()["after"] and on_record["new_answers"] == by_model.to_dict()[
        "new_answers"]  # fmt: skip
    assert yaml.safe_load((folder / "on-record.yaml").read_text())["thresholds"] == yaml.safe_load(
        by_model.text)["thresholds"]  # fmt: skip


# -- small and bad inputs ---------------------------------------------------------------------


def test_a_tiny_set_is_too_small_to_trust_and_unscored_answers_are_reported(
    checked: list[Checked], folder: Path
) -> None:
    rows = [a.row for a in checked[TUNE : TUNE + TINY]]
    failed = {"prompt": "Hi", "response": "Hello!", "harmful": False, "scores": None, "error": "scoring timed out"}
    path = write(folder / "tiny.jsonl", [*rows, failed])
    ran = cli("policy", "tune", "--examples", str(path), "--output", str(folder / "tiny.yaml"), "--json",
              "--model", NO_MODEL)  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    data = json.loads(ran.stdout)
    assert not data["trusted"]
    assert data["examples"]["not_scored"] == 1 and data["not_scored"] == [
        {"line": TINY + 1, "error": "scoring timed out"}
    ]
    assert f"not scored {path}:{TINY + 1}: scoring timed out" in " ".join(ran.stderr.split())
    acceptable = data["examples"]["acceptable"]
    assert acceptable + data["examples"]["unacceptable"] == TINY
    assert any(f"only {acceptable} acceptable examples" in w for w in data["warnings"])
    assert "warning: too small to trust" in ran.stderr
    head = (folder / "tiny.yaml").read_text(encoding="utf-8")
    assert "# WARNING: too small to trust: only" in head
    assert load_policy(folder / "tiny.yaml").name == "default-tuned"


def test_bad_label_lines_are_reported_with_file_and_line(folder: Path) -> None:
    lines = [
        json.dumps({"response": "Fine.", "label": "acceptable"}),
        json.dumps({"response": "Fine.", "label": "okay"}),
        json.dumps({"response": "Fine."}),
        "",
        json.dumps({"response": "Fine.", "harmful": True, "acceptable": False}),
        json.dumps({"response": "Fine.", "harmful": "yes"}),
        "{not json",
        json.dumps({"response": "Fine.", "acceptable": True, "scores": [0.1, 0.2]}),
    ]
    path = folder / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    ran = cli("policy", "tune", "--examples", str(path), "--output", str(folder / "never.yaml"))
    assert ran.returncode == 2
    err = ran.stderr
    assert f"{path}:2: field 'label' must be \"acceptable\" or \"not acceptable\", got 'okay'" in err
    assert f"{path}:3: no label" in err
    assert f"{path}:5: more than one label field (acceptable, harmful)" in err
    assert f"{path}:6: field 'harmful' must be true or false, got 'yes'" in err
    assert f"{path}:7: invalid JSON" in err
    assert f"{path}:8: field 'scores'" in err
    assert f"{path}:1:" not in err and f"{path}:4:" not in err
    assert "Traceback" not in err
    assert not (folder / "never.yaml").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--target-fpr", "0"), "target_fpr must lie strictly between 0 and 1"),
        (("--target-fpr", "1"), "target_fpr must lie strictly between 0 and 1"),
        (("--values", "kindness"), "--values: unknown value 'kindness'"),
        (("--policy", "no-such-policy"), "policy 'no-such-policy' not found"),
    ],
)
def test_bad_arguments_exit_2(tuning: Path, folder: Path, args: tuple[str, ...], message: str) -> None:
    ran = cli("policy", "tune", "--examples", str(tuning), "--output", str(folder / "never.yaml"), *args)
    assert ran.returncode == 2, ran.stderr
    assert message in " ".join(ran.stderr.split())


def test_a_target_the_kept_rules_already_exceed_is_refused(tuning: Path, folder: Path) -> None:
    # A forbidden region that holds nearly every answer alters the acceptable ones whatever the floors say.
    greedy = folder / "greedy.yaml"
    greedy.write_text('name: greedy\nextends: default\nregions:\n  everything:\n    kind: forbidden\n'
                      '    box: {hedonism: {max: 1.0}}\n', encoding="utf-8")  # fmt: skip
    ran = cli("policy", "tune", "-p", str(greedy), "--examples", str(tuning), "--model", NO_MODEL)
    assert ran.returncode == 2
    assert "cannot be met: the rules of greedy that are not tuned already alter 100.0%" in " ".join(ran.stderr.split())


# -- where the child goes ---------------------------------------------------------------------


def test_the_child_goes_beside_p_and_extends_it_by_a_relative_path(tuning: Path, tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "support.yaml").write_text(
        "name: support\nversion: '3'\nextends: default\nthresholds:\n  power: {max: 0.6, action: block}\n",
        encoding="utf-8",
    )
    data = tune_json("-p", "policies/support.yaml", "--examples", str(tuning), "--ceilings", "power",
                     "--bootstrap", "200", "--model", NO_MODEL, cwd=tmp_path)  # fmt: skip
    written = tmp_path / "policies" / "support-tuned.yaml"
    assert data["child"] == {"name": "support-tuned", "output": "policies/support-tuned.yaml"}
    assert yaml.safe_load(written.read_text())["extends"] == "support.yaml"
    assert load_policy(written).name == "support-tuned"
    assert {b["rule"] for b in data["bounds"]} >= {"thresholds.power.max", "thresholds.security.min"}
    # Elsewhere the path is relative to the child's folder; a shipped name stays a name, in the working folder.
    tune_json("-p", "policies/support.yaml", "--examples", str(tuning), "--output", "out/deep/child.yaml",
              "--bootstrap", "200", "--model", NO_MODEL, cwd=tmp_path)  # fmt: skip
    assert yaml.safe_load((tmp_path / "out/deep/child.yaml").read_text())["extends"] == "../../policies/support.yaml"
    assert load_policy(tmp_path / "out/deep/child.yaml").thresholds["power"].action == "block"
    tune_json("--examples", str(tuning), "--bootstrap", "200", "--model", NO_MODEL, cwd=tmp_path)
    assert yaml.safe_load((tmp_path / "default-tuned.yaml").read_text())["extends"] == "default"
