"""``guardrail policy diff`` on 100,000 recorded answers, end to end, printed as JSON.

    python benchmarks/bench_policy_diff.py [--rows 100000] [--repeats 3] [--data ../shared/data] [--out FILE]

Writes a ``guardrail score --policy default`` output file of ``--rows`` answers (the harm sources'
prompts and answers, cycled, each with an id; no model runs): scores from a seeded generator shaped
like the shipped model's on mixed traffic (most answers near 0 on every value, about 12 % opposing
the safety values, 3 % near the floors), 0.5 % failed (``scores: null`` with an error) and 1 % with
text in another language (a recorded ``languages.other`` violation), decided under ``default`` as
``guardrail score`` would record them. Then it compares ``default`` with two policies, a child
(one floor moved, one rule given another action, a region added, other languages logged) and
``strict``:

- the real CLI ``guardrail policy diff default NEW --on FILE --json`` in a subprocess (start-up,
  reading and printing included), ``--repeats`` times: the target is under 5 s;
- in-process ``diff_sources`` (reading and deciding apart), and the same answers decided by the
  engines alone (``bulk=False``), which must give the same report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_check import publish

from guardrail import VALUES, ValueVector, Violation
from guardrail._audit.diff import diff_policies, diff_sources
from guardrail._audit.recorded import read_recorded
from guardrail._policy.engine import Engine
from guardrail._policy.loader import load_policy

SAFETY = ("security", "conformity", "benevolence", "universalism")
CHILD = """\
name: default-next
version: "1.3"
extends: default
thresholds:
  benevolence: {min: -0.3}
  security: {action: hard_block, severity: critical}
regions:
  hostile:
    kind: forbidden
    box: {benevolence: {max: -0.2}, universalism: {max: -0.2}}
    action: log
    severity: low
actions:
  hard_block: {type: block, message: "Not here."}
languages: {other: log}
"""


def scores(rng: random.Random) -> dict[str, float]:
    """Ten scores shaped like the shipped model's on mixed traffic."""
    kind = rng.random()
    means = {"benevolence": 0.12, "universalism": 0.06, "security": 0.05, "achievement": 0.04}
    if kind < 0.12:  # opposes the safety values, together
        shift = rng.gauss(-0.5, 0.18)
        means = {v: shift + rng.gauss(0, 0.1) for v in SAFETY}
    elif kind < 0.15:  # near one floor
        means = {rng.choice(SAFETY): rng.gauss(-0.3, 0.06)}
    return {v: round(max(-1.0, min(1.0, rng.gauss(means.get(v, 0.0), 0.1))), 4) for v in VALUES}


def write_recorded(path: Path, rows: int, data: Path, seed: int) -> None:
    """A ``guardrail score --policy default`` output of ``rows`` answers."""
    texts = [
        json.loads(line) for f in sorted((data / "harm").glob("*.jsonl")) for line in f.read_text("utf-8").splitlines()
    ]
    texts = [t for t in texts if 40 < len(t["response"]) < 600] or [{"prompt": "Hi?", "response": "Hello there."}]
    rng = random.Random(seed)
    engine = Engine(load_policy("default"))
    with path.open("w", encoding="utf-8") as out:
        for n in range(rows):
            text = texts[n % len(texts)]
            row: dict[str, Any] = {"id": f"a{n}", "prompt": text["prompt"], "response": text["response"]}
            draw = rng.random()
            if draw < 0.005:
                row |= {"scores": None, "error": "scoring took longer than 10000 ms", "decision": None,
                        "violations": None}  # fmt: skip
            else:
                vector = scores(rng)
                extra = ()
                if draw < 0.015:  # a piece in another language
                    share = round(rng.uniform(0.2, 1.0), 4)
                    extra = (Violation("languages.other", None, share, 0.0, share, "block", "high", "other language"),)
                    vector = None if share == 1.0 else vector
                verdict = engine.decide(None if vector is None else ValueVector(**vector), extra=extra)
                row |= {"scores": vector, "error": None, "decision": verdict.decision,
                        "violations": [v.to_dict() for v in verdict.violations]}  # fmt: skip
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def timed_cli(old: str, new: str, recorded: Path, repeats: int) -> tuple[list[float], dict[str, Any]]:
    command = [sys.executable, "-m", "guardrail", "policy", "diff", old, new, "--on", str(recorded), "--json"]
    seconds, report = [], {}
    for _ in range(repeats):
        start = time.perf_counter()
        ran = subprocess.run(command, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if ran.returncode != 0:
            sys.exit(f"guardrail policy diff failed:\n{ran.stderr[-3000:]}")
        report = json.loads(ran.stdout)
    return seconds, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        recorded, child = folder / "scored.jsonl", folder / "default-next.yaml"
        child.write_text(CHILD, encoding="utf-8")
        write_recorded(recorded, args.rows, args.data, args.seed)
        runs = {}
        for name, new in (("child", str(child)), ("strict", "strict")):
            cli_seconds, cli_report = timed_cli("default", new, recorded, args.repeats)
            start = time.perf_counter()
            inproc = diff_sources("default", new, str(recorded))
            total_s = time.perf_counter() - start
            start = time.perf_counter()
            answers = read_recorded(str(recorded))
            read_s = time.perf_counter() - start
            start = time.perf_counter()
            engines = diff_policies(load_policy("default"), load_policy(new), answers, sources=("default", new),
                                    bulk=False)  # fmt: skip
            engines_s = time.perf_counter() - start
            same = engines.model_dump(exclude={"engine_rows"}) == inproc.model_dump(exclude={"engine_rows"})
            runs[name] = {
                "new": new if name == "strict" else "default-next (child of default)",
                "cli_seconds": [round(s, 3) for s in cli_seconds],
                "cli_seconds_median": round(statistics.median(cli_seconds), 3),
                "cli_rows_per_s": round(args.rows / statistics.median(cli_seconds)),
                "cli_equals_in_process": cli_report == json.loads(inproc.model_dump_json()),
                "in_process_seconds": round(total_s, 3),
                "in_process_read_seconds": round(read_s, 3),
                "in_process_rows_per_s": round(args.rows / total_s),
                "engines_only_decide_seconds": round(engines_s, 3),
                "engines_only_same_report": same,
                "changed": inproc.changed,
                "engine_rows": inproc.engine_rows,
                "transitions": {t.change: t.rows for t in inproc.transitions},
                "rules": {r.rule: [r.newly_fire, r.no_longer_fire] for r in inproc.rules},
            }
        size = recorded.stat().st_size
    worst = max(r["cli_seconds_median"] for r in runs.values())
    publish(
        {
            "benchmark": "policy_diff",
            "rows": args.rows,
            "file_mb": round(size / 2**20, 1),
            "seconds": worst,
            "rows_per_s": round(args.rows / worst),
            "target_seconds": 5,
            "meets_target": worst < 5 and all(math.isfinite(r["cli_seconds_median"]) for r in runs.values()),
            "runs": runs,
            "machine": {"orjson": _has_orjson()},
        },
        args.out,
    )


def _has_orjson() -> bool:
    try:
        import orjson  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    main()
