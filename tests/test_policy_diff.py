"""``guardrail policy diff``: real answers scored by the shipped model, re-decided under changed policies.

Answers from the harm data's test rows (and two in other languages) are checked once with the real
model, then written the ways a deployment records them: a ``guardrail score --policy default``
output, an OTLP span file from the SDK, a Phoenix project. The child policies plant changes whose
answers a few comparisons on the recorded scores name exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from typer.testing import CliRunner

from guardrail import VALUES, Guard, Policy
from guardrail._audit.diff import diff_policies
from guardrail._audit.recorded import Recorded, read_recorded
from guardrail._cli import app
from guardrail._policy.loader import load_policy
from guardrail._serving.rescore import scored_row
from guardrail._telemetry.checks import SPAN_NAME
from guardrail._telemetry.otlpjson import encode_spans

if TYPE_CHECKING:
    from guardrail._scoring.scorer import TransformerScorer

REPO = Path(__file__).resolve().parents[1]
FOREIGN = [
    ("¿Qué opinas?", "Creo que deberías hablar con tu familia y pedirles ayuda, porque juntos encontraréis una solución."),
    ("Was meinst du?", "Ich glaube, du solltest mit deiner Familie sprechen und sie um Hilfe bitten, gemeinsam findet ihr"
     " eine Lösung für das Problem."),
]  # fmt: skip
OLD_BENEVOLENCE = -0.359  # the default policy's floor


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real ``guardrail`` command in a subprocess."""
    return subprocess.run([sys.executable, "-m", "guardrail", *args], capture_output=True, text=True, cwd=REPO,
                          timeout=300)  # fmt: skip


def diff_json(*args: str) -> dict[str, Any]:
    ran = cli("policy", "diff", *args, "--json")
    assert ran.returncode == 0, ran.stderr
    return json.loads(ran.stdout)


# -- recordings -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def answers(data_dir: Path) -> list[tuple[str, str]]:
    """20 harmful and 20 harmless test answers of one harm source, and the two in other languages."""
    rows = [json.loads(line) for line in (data_dir / "harm" / "beavertails.jsonl").read_text("utf-8").splitlines()]
    rows = [r for r in rows if r["split"] == "test" and 40 < len(r["response"]) < 400]
    picked = [r for r in rows if r["harmful"]][:20] + [r for r in rows if not r["harmful"]][:20]
    unique = list({r["response"]: (r["prompt"], r["response"]) for r in picked}.values())
    return unique + FOREIGN


@pytest.fixture(scope="module")
def scored(answers: list[tuple[str, str]], scorer: TransformerScorer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The answers as ``guardrail score --policy default`` writes them, each with an id ``qN``."""
    guard = Guard(load_policy("default"), scorer)
    verdicts = guard.check_many([r for _, r in answers], [p for p, _ in answers])
    path = tmp_path_factory.mktemp("recorded") / "scored.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for n, ((prompt, response), verdict) in enumerate(zip(answers, verdicts)):
            row = {"id": f"q{n}", "prompt": prompt, "response": response}
            scored_row(row, verdict.to_dict(), verdict.error, decide=True)
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="module")
def spans(answers: list[tuple[str, str]], scorer: TransformerScorer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same answers checked by a guard exporting spans through the OpenTelemetry SDK, as OTLP/JSON."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    guard = Guard(load_policy("default"), scorer, tracer_provider=provider, capture_content=True)
    for prompt, response in answers:
        guard.check(response, prompt=prompt)
    path = tmp_path_factory.mktemp("spans") / "spans.jsonl"
    path.write_text(json.dumps(encode_spans(exporter.get_finished_spans())) + "\n", encoding="utf-8")
    return path


def recorded_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def span_rows(path: Path) -> list[dict[str, Any]]:
    """Per check span: its id as the diff names it, its scores and its decision."""
    document = json.loads(path.read_text(encoding="utf-8"))
    rows = []
    for resource in document["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                if span["name"] != SPAN_NAME:
                    continue
                attrs = {a["key"]: next(iter(a["value"].values())) for a in span["attributes"]}
                scores = (
                    {v: attrs[f"guardrail.value.{v}"] for v in VALUES} if "guardrail.value.power" in attrs else None
                )
                rules = (
                    [v["stringValue"] for v in attrs["guardrail.violations"]["values"]]
                    if "guardrail.violations" in attrs
                    else []
                )
                rows.append({"id": attrs.get("guardrail.decision_id", span["traceId"]), "scores": scores,
                             "decision": attrs["guardrail.decision"],
                             "violations": [{"rule": rule} for rule in rules]})  # fmt: skip
    return rows


# -- the planted change and what it must find ----------------------------------------------------


def planted(rows: list[dict[str, Any]], folder: Path) -> tuple[Path, dict[str, set[str]], dict[str, set[str]]]:
    """A child of default that raises the benevolence floor past two allowed answers, gives security its own
    critical block action and logs a new region around the highest power score; and, from the recorded
    scores alone, the answers each change moves and each rule newly fires on."""
    scored_rows = [r for r in rows if r["scores"] is not None]
    allowed = sorted(r["scores"]["benevolence"] for r in scored_rows if r["decision"] == "allow")
    floor = round((allowed[1] + allowed[2]) / 2, 6)  # above the two lowest allowed benevolence scores
    assert floor > OLD_BENEVOLENCE and allowed[1] < floor < allowed[2], allowed[:4]
    power = sorted(r["scores"]["power"] for r in scored_rows)
    edge = round((power[-2] + power[-1]) / 2, 6)
    assert power[-2] < edge < power[-1]
    child = folder / "child.yaml"
    child.write_text(
        "name: child\nversion: '2'\nextends: default\n"
        f"thresholds:\n  benevolence: {{min: {floor}}}\n  security: {{action: hard_block, severity: critical}}\n"
        f"regions:\n  powerful:\n    kind: forbidden\n    box: {{power: {{min: {edge}}}}}\n    action: note\n"
        "    severity: low\n"
        "actions:\n  hard_block: {type: block, message: 'No.'}\n  note: {type: log}\n",
        encoding="utf-8",
    )
    moves: dict[str, set[str]] = {}
    fires: dict[str, set[str]] = {"thresholds.benevolence.min": set(), "regions.powerful": set()}
    for r in scored_rows:
        s = r["scores"]
        foreign = any(v["rule"] == "languages.other" for v in r["violations"] or ())  # blocked by the language rule
        old_floors = s["security"] < -0.3 or s["conformity"] < -0.3 or s["universalism"] < -0.3 or foreign
        old = "block" if old_floors or s["benevolence"] < OLD_BENEVOLENCE else "allow"
        if s["security"] < -0.3:
            new = "block(hard_block)"
        elif old_floors or s["benevolence"] < floor:
            new = "block(block)"
        else:
            new = "log" if s["power"] > edge else "allow"
        if OLD_BENEVOLENCE <= s["benevolence"] < floor:
            fires["thresholds.benevolence.min"].add(r["id"])
        if s["power"] > edge:
            fires["regions.powerful"].add(r["id"])
        before = "block(block)" if old == "block" and new.startswith("block") else old
        if before != new:
            change = f"{before}->{new}" if before.startswith("block") else f"{old}->{new.split('(')[0]}"
            moves.setdefault(change, set()).add(r["id"])
    return child, moves, fires


def found(report: dict[str, Any]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    moves = {t["change"]: set(t["examples"]) for t in report["transitions"]}
    assert all(t["rows"] == len(t["examples"]) for t in report["transitions"])  # every id kept (--examples 1000)
    fires = {r["rule"]: set(r["newly_fire_examples"]) for r in report["rules"]}
    assert not any(r["no_longer_fire"] for r in report["rules"])  # the child only adds
    return moves, fires


def test_diff_finds_the_planted_changes(scored: Path, tmp_path: Path) -> None:
    rows = recorded_rows(scored)
    child, moves, fires = planted(rows, tmp_path)
    assert len(moves["allow->block"]) == 2 and moves["block(block)->block(hard_block)"], moves
    report = diff_json("default", str(child), "--on", str(scored), "--examples", "1000")
    assert found(report) == (moves, fires)
    assert report["rows"] == len(rows) and report["changed"] == sum(len(ids) for ids in moves.values())
    assert (report["old"]["name"], report["new"]["name"], report["new"]["source"]) == ("default", "child", str(child))
    assert report["disagree_recorded"] == 0  # recorded under default: the old side re-decides them as recorded
    # Two example ids per direction and rule, the first in file order.
    capped = diff_json("default", str(child), "--on", str(scored), "--examples", "2")
    order = [r["id"] for r in rows]
    for t in capped["transitions"]:
        assert t["examples"] == sorted(moves[t["change"]], key=order.index)[:2]


def test_human_output_is_a_table(scored: Path, tmp_path: Path) -> None:
    child, moves, _ = planted(recorded_rows(scored), tmp_path)
    ran = cli("policy", "diff", "default", str(child), "--on", str(scored))
    assert ran.returncode == 0, ran.stderr
    assert "decisions and actions that change" in ran.stdout and "rules that fire on other answers" in ran.stdout
    for change in moves:
        assert change in ran.stdout
    assert "thresholds.benevolence.min" in ran.stdout and "┃" in ran.stdout


def test_a_policy_against_itself_finds_nothing(scored: Path, spans: Path, tmp_path: Path) -> None:
    child, _, _ = planted(recorded_rows(scored), tmp_path)
    for source in (scored, spans):
        for policy in ("default", str(child), "strict"):
            report = diff_json(policy, policy, "--on", str(source))
            assert (report["changed"], report["transitions"], report["rules"]) == (0, [], [])
    ran = cli("policy", "diff", "strict", "strict", "--on", str(scored))
    assert ran.returncode == 0 and "no answer is decided differently" in ran.stdout


def test_rows_without_an_id_are_named_by_file_and_line(scored: Path, tmp_path: Path) -> None:
    rows = recorded_rows(scored)
    child, moves, _ = planted(rows, tmp_path)
    bare = tmp_path / "bare.jsonl"
    bare.write_text("\n".join(json.dumps({k: v for k, v in r.items() if k != "id"}) for r in rows) + "\n")
    report = diff_json("default", str(child), "--on", str(bare), "--examples", "1000")
    lines = {r["id"]: f"{bare}:{n}" for n, r in enumerate(rows, 1)}
    assert {t["change"]: set(t["examples"]) for t in report["transitions"]} == {
        change: {lines[i] for i in ids} for change, ids in moves.items()
    }


def test_span_file_input(spans: Path, tmp_path: Path) -> None:
    rows = span_rows(spans)
    child, moves, fires = planted(rows, tmp_path)
    assert len(moves["allow->block"]) == 2
    report = diff_json("default", str(child), "--on", str(spans), "--examples", "1000")
    assert found(report) == (moves, fires)
    assert report["rows"] == len(rows) and report["disagree_recorded"] == 0


def phoenix_body(spans: Path) -> dict[str, Any]:
    """The span file as Phoenix's REST API serves a project's spans: flat attributes, ISO times."""
    from guardrail._audit.load import read_span_file

    def iso(ns: int) -> str:
        return datetime.fromtimestamp(ns / 1e9, tz=timezone.utc).isoformat()

    return {"data": [{"name": s.name, "context": {"trace_id": s.trace_id, "span_id": s.span_id}, "parent_id": s.parent_id,
                      "start_time": iso(s.start_ns), "end_time": iso(s.end_ns), "span_kind": "GUARDRAIL",
                      "status_code": s.status, "events": [], "attributes": dict(s.attributes)}
                     for s in read_span_file(spans)], "next_cursor": None}  # fmt: skip


@pytest.fixture
def phoenix(spans: Path) -> Iterator[str]:
    """A loopback HTTP server answering Phoenix's span route for project ``prod``."""
    body = json.dumps(phoenix_body(spans)).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            ok = self.path.startswith("/v1/projects/prod/spans")
            self.send_response(200 if ok else 404)
            self.send_header("content-type", "application/json")
            self.end_headers()
            self.wfile.write(body if ok else b'{"detail": "not found"}')

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_phoenix_project_input(spans: Path, phoenix: str, tmp_path: Path) -> None:
    child, moves, fires = planted(span_rows(spans), tmp_path)
    report = diff_json("default", str(child), "--on", phoenix, "--project", "prod", "--examples", "1000")
    assert found(report) == (moves, fires)
    from_file = diff_json("default", str(child), "--on", str(spans), "--examples", "1000")
    assert {**report, "source": None} == {**from_file, "source": None}


# -- failures and the language rule --------------------------------------------------------------


def test_failed_scoring_rows_are_decided_by_on_error(answers: list[tuple[str, str]], scorer: TransformerScorer,
                                                      tmp_path: Path) -> None:  # fmt: skip
    # A recording policy scoring at most 200 characters: the longer answers fail to score, for real.
    short = tmp_path / "short.yaml"
    short.write_text("name: short\nextends: default\nmax_chars: 200\noversize: error\n", encoding="utf-8")
    verdicts = Guard(load_policy(str(short)), scorer).check_many([r for _, r in answers], [p for p, _ in answers])
    path = tmp_path / "failed.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for n, verdict in enumerate(verdicts):
            row = {"id": f"q{n}", "response": answers[n][1]}
            scored_row(row, verdict.to_dict(), verdict.error, decide=True)
            out.write(json.dumps(row) + "\n")
    failed = {f"q{n}" for n, v in enumerate(verdicts) if v.error is not None}
    assert failed and len(failed) < len(verdicts)
    lenient = tmp_path / "lenient.yaml"
    lenient.write_text("name: lenient\nextends: default\non_error: allow\n", encoding="utf-8")
    report = diff_json("default", str(lenient), "--on", str(path), "--examples", "1000")
    assert report["unscored"] == len(failed) + len(FOREIGN)  # the answers all in other languages: no scores either
    assert [(t["change"], set(t["examples"])) for t in report["transitions"]] == [("block->allow", failed)]
    assert report["rules"] == []
    named = tmp_path / "named.yaml"  # on_error block with an action of its own: block(block) -> block(failed)
    named.write_text("name: named\nextends: default\nerror_action: failed\nactions:\n  failed: {type: block}\n")
    moved = diff_json("default", str(named), "--on", str(path), "--examples", "1000")
    assert [(t["change"], set(t["examples"])) for t in moved["transitions"]] == [
        ("block(block)->block(failed)", failed)
    ]


def test_language_rule_is_carried_with_each_policy_action(scored: Path, tmp_path: Path) -> None:
    rows = recorded_rows(scored)
    foreign = {r["id"] for r in rows if any(v["rule"] == "languages.other" for v in r["violations"])}
    assert len(foreign) == 2 and all(r["decision"] == "block" for r in rows if r["id"] in foreign)
    # Under other: log the answers in other languages are delivered and logged (unless a value rule blocks).
    logged = tmp_path / "logged.yaml"
    logged.write_text("name: logged\nextends: default\nlanguages: {other: log}\n", encoding="utf-8")
    report = diff_json("default", str(logged), "--on", str(scored), "--examples", "1000")
    assert [(t["change"], set(t["examples"])) for t in report["transitions"]] == [("block->log", foreign)]
    assert (report["not_rescorable_old"], report["not_rescorable_new"], report["rules"]) == (0, 0, [])
    # Under other: score their text would have been scored, and never was: counted apart, the rule dropped.
    scoring = tmp_path / "scoring.yaml"
    scoring.write_text("name: scoring\nextends: default\nlanguages: {other: score}\n", encoding="utf-8")
    report = diff_json("default", str(scoring), "--on", str(scored), "--examples", "1000")
    assert (report["not_rescorable_old"], report["not_rescorable_new"]) == (0, 2)
    [rule] = report["rules"]
    assert (rule["rule"], set(rule["no_longer_fire_examples"]), rule["newly_fire"]) == ("languages.other", foreign, 0)
    assert report["changed"] <= 2 and {i for t in report["transitions"] for i in t["examples"]} <= foreign


# -- the bulk pass agrees with the engines ------------------------------------------------------


def test_bulk_pass_decides_as_the_engines() -> None:
    rng = np.random.default_rng(11)
    n = 6000
    scores = np.clip(rng.normal(0.0, 0.35, (n, len(VALUES))), -1, 1).round(4)
    scores[::97] = np.nan
    scores[5:25, VALUES.index("universalism")] = -0.3  # on a floor exactly
    scores[25:45, VALUES.index("security")] = -0.15
    language = np.full(n, np.nan)
    language[::89] = 0.5
    errors = ["scoring timed out" if i % 97 == 0 and i % 2 else None for i in range(n)]
    recorded = Recorded("mem", [f"r{i}" for i in range(n)], scores, errors, language, [None] * n)
    wild = Policy.model_validate({
        "name": "wild", "on_error": "allow", "languages": {"other": "log", "severity": "low"},
        "thresholds": {"benevolence": {"min": -0.2, "action": "soften", "severity": "low"},
                       "power": {"max": 0.5, "action": "log"}, "security": {"min": -0.3, "action": "hard"},
                       "conformity": {"min": -0.4, "max": 0.9}},
        "regions": {
            "hostile": {"kind": "forbidden", "box": {"benevolence": {"max": -0.1}, "universalism": {"max": -0.1}},
                        "action": "hard", "severity": "critical"},
            "pushy": {"kind": "forbidden", "distance": {"reference": {"power": 0.8, "achievement": 0.6},
                      "metric": "cosine", "max": 0.3}, "action": "log"},
            "near": {"kind": "allowed", "distance": {"reference": {}, "metric": "l2", "max": 1.1}, "action": "soften"},
            "calm": {"kind": "allowed", "box": {"hedonism": {"min": -0.5, "max": 0.5}}, "action": "block",
                     "severity": "low"},
            "plain": {"kind": "allowed", "distance": {"reference": {"security": 0.2}, "metric": "l1", "max": 3.0},
                      "action": "block", "severity": "low"},
        },
        "actions": {"soften": {"type": "rewrite", "strategy": "redact"}, "hard": {"type": "block"}},
    })  # fmt: skip
    shadow = wild.model_copy(update={"mode": "shadow"})
    default, strict = load_policy("default"), load_policy("strict")
    settled = 0
    for old, new in [(default, strict), (default, wild), (wild, shadow), (strict, wild), (wild, default)]:
        fast = diff_policies(old, new, recorded, examples=3)
        slow = diff_policies(old, new, recorded, examples=3, bulk=False)
        assert fast.model_dump(exclude={"engine_rows"}) == slow.model_dump(exclude={"engine_rows"}), (
            old.name,
            new.name,
        )
        assert slow.engine_rows == n and fast.changed > 0
        # Fewer than all: the engines' spot check agreed with the array pass (else they decide every answer).
        assert fast.engine_rows < n, (old.name, new.name)
        settled += n - fast.engine_rows
    assert settled > n  # a good share of the answers was settled by the arrays, not the engines


# -- bad input ---------------------------------------------------------------------------------


def test_malformed_inputs_are_named(scored: Path, tmp_path: Path) -> None:
    good = scored.read_text(encoding="utf-8").splitlines()
    row = json.loads(good[0])

    def file(name: str, *lines: str) -> str:
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return str(path)

    def with_(**fields: Any) -> str:
        return json.dumps({**row, **fields})

    scores = row["scores"]
    cases = {
        file("json.jsonl", good[0], good[1], '{"scores": {'): "json.jsonl:3: invalid JSON",
        file("list.jsonl", good[0], "[1, 2]"): "list.jsonl:2: expected a JSON object",
        file("kind.jsonl", good[0], with_(scores=[0.1] * 10)): "kind.jsonl:2: field 'scores' must be an object",
        file("few.jsonl", with_(scores={k: v for k, v in scores.items() if k != "power"})):
            "few.jsonl:1: field 'scores' is missing power",
        file("odd.jsonl", good[0], with_(scores={**scores, "kindness": 0.1})): "odd.jsonl:2: field 'scores' has an "
            "unknown value 'kindness'",
        file("range.jsonl", good[0], good[1], with_(scores={**scores, "hedonism": 1.5})):
            "range.jsonl:3: scores.hedonism is 1.5, not a score in [-1, 1]",
        file("text.jsonl", with_(scores={**scores, "tradition": "0.2"})): "text.jsonl:1: scores.tradition is '0.2', "
            "not a number",
        file("flag.jsonl", with_(scores={**scores, "power": True})): "flag.jsonl:1: scores.power is True, not a number",
        file("gone.jsonl", good[0], json.dumps({"id": "x", "response": "hi", "scoresX": 1})):
            "gone.jsonl:2: field 'scores' is missing",
        file("viol.jsonl", good[0], with_(violations={"rule": "x"})): "viol.jsonl:2: field 'violations' must be a list",
        file("rule.jsonl", with_(violations=[{"margin": 1}])): "rule.jsonl:1: violations[0] must be an object",
        file("dec.jsonl", with_(decision="maybe")): "dec.jsonl:1: field 'decision' must be one of",
        file("err.jsonl", with_(error=3)): "err.jsonl:1: field 'error' must be a string or null",
        file("unscored.jsonl", json.dumps({"prompt": None, "response": "hello"})):
            "unscored.jsonl:1: field 'scores' is missing: score the answers with `guardrail score` first",
        file("empty.jsonl", "", " "): "empty.jsonl: the file is empty",
        file("otlp.jsonl", '{"resourceSpans": [}'): "otlp.jsonl:1:20: invalid JSON",
        str(tmp_path / "missing.jsonl"): "missing.jsonl: cannot read",
    }  # fmt: skip
    for source, message in cases.items():
        result = CliRunner().invoke(app, ["policy", "diff", "default", "strict", "--on", source])
        assert result.exit_code == 2, (source, result.output)
        assert message in " ".join(result.output.split()), (source, result.output)
    for args, message in {
        ("default", "strict", "--on", "http://127.0.0.1:1"): "is a Phoenix URL: name the project with --project",
        ("default", "strict", "--on", str(scored), "--project", "p"): "--project goes with a Phoenix URL",
        ("default", "no-such-policy", "--on", str(scored)): "no-such-policy",
        ("default", "strict", "--on", str(scored), "--examples", "-1"): "--examples",
    }.items():
        result = CliRunner().invoke(app, ["policy", "diff", *args])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), (args, result.output)
    ran = cli("policy", "diff", "default", "strict", "--on", str(tmp_path / "range.jsonl"))
    assert (
        ran.returncode == 2 and "range.jsonl:3: scores.hedonism is 1.5" in ran.stderr and "Traceback" not in ran.stderr
    )


# -- the audit report --------------------------------------------------------------------------


def test_audit_report_embeds_the_diff(spans: Path, tmp_path: Path) -> None:
    child, moves, fires = planted(span_rows(spans), tmp_path)
    diff = tmp_path / "diff.json"
    ran = cli("policy", "diff", "default", str(child), "--on", str(spans), "--json")
    assert ran.returncode == 0, ran.stderr
    diff.write_text(ran.stdout, encoding="utf-8")
    report = tmp_path / "report.html"
    ran = cli("audit", str(spans), "--out", str(report), "--diff", str(diff))
    assert ran.returncode == 0, ran.stderr
    html = report.read_text(encoding="utf-8")
    section = html[html.index('<h2 id="policy-change">Policy change</h2>') :]
    section = section.split("<h2>", 1)[0]  # up to the next section
    assert f"<b>{sum(len(i) for i in moves.values())}</b>" in section
    for change, ids in moves.items():
        assert change.replace(">", "&gt;") in section
        shown = sorted(ids, key=[r["id"] for r in span_rows(spans)].index)[:5]
        assert all(f"<code>{i}</code>" in section for i in shown)
    assert all(f"<code>{rule}</code>" in section for rule in fires)
    # Without --diff there is no such section; a file that is not a diff is named.
    plain = tmp_path / "plain.html"
    assert cli("audit", str(spans), "--out", str(plain)).returncode == 0
    assert "Policy change" not in plain.read_text(encoding="utf-8")
    not_diff = tmp_path / "not-diff.json"
    not_diff.write_text('{"rows": 3}', encoding="utf-8")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({**json.loads(diff.read_text()), "rows": "many"}), encoding="utf-8")
    for bad, message in ((not_diff, "not the output of `guardrail policy diff --json`"), (broken, "rows:"),
                         (tmp_path / "none.json", "none.json: cannot read")):  # fmt: skip
        result = CliRunner().invoke(app, ["audit", str(spans), "--out", str(tmp_path / "x.html"), "--diff", str(bad)])
        assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
        assert not (tmp_path / "x.html").exists()


def test_reading_a_score_output_in_process(scored: Path) -> None:
    recorded = read_recorded(str(scored))
    rows = recorded_rows(scored)
    assert list(recorded.ids) == [r["id"] for r in rows]
    assert recorded.scored.sum() == sum(r["scores"] is not None for r in rows)
    first = next(n for n, r in enumerate(rows) if r["scores"] is not None)
    assert recorded.scores[first].tolist() == [rows[first]["scores"][v] for v in VALUES]
    assert list(recorded.decisions) == [r["decision"] for r in rows]
