"""``guardrail score --ray`` on a large file: rows/s, and a sample compared with ``guardrail score``, as JSON.

    python benchmarks/bench_rescore.py [--rows 100000] [--actors 2] [--sample 1000] [--data ../shared/data]
        [--out FILE]

Writes ``--rows`` rows (the harm sources' answers of 40-200 characters, cycled, each with an id
and a nested field), runs the real CLI ``guardrail score IN OUT --ray --actors N -p default`` in a
subprocess (a local Ray: start-up and model loading included), then ``guardrail score`` without
Ray on ``--sample`` rows drawn from the file, and compares those rows: decisions equal, largest
score difference (batches are cut differently on the actors, so only float rounding may differ).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_check import publish


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--sample", type=int, default=1000)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    source = [json.loads(line) for f in sorted((args.data / "harm").glob("*.jsonl")) for line in f.open()]
    source = [r for r in source if 40 < len(r["response"]) < 200]
    rows = [{"id": n, "prompt": source[n % len(source)]["prompt"], "response": source[n % len(source)]["response"],
             "meta": {"n": n}} for n in range(args.rows)]  # fmt: skip
    cli = [sys.executable, "-m", "guardrail", "score"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        start = time.perf_counter()
        ran = subprocess.run([*cli, str(folder / "in.jsonl"), str(folder / "ray.jsonl"), "-p", "default", "--ray",
                              "--actors", str(args.actors)], capture_output=True, text=True)  # fmt: skip
        seconds = time.perf_counter() - start
        if ran.returncode != 0:
            sys.exit(f"guardrail score --ray failed:\n{ran.stderr[-3000:]}")
        scored = [json.loads(line) for line in (folder / "ray.jsonl").read_text().splitlines()]
        picked = sorted(random.Random(3).sample(range(len(rows)), min(args.sample, len(rows))))
        (folder / "sample.jsonl").write_text("".join(json.dumps(rows[i]) + "\n" for i in picked))
        plain = subprocess.run([*cli, str(folder / "sample.jsonl"), str(folder / "plain.jsonl"), "-p", "default"],
                               capture_output=True, text=True)  # fmt: skip
        if plain.returncode != 0:
            sys.exit(f"guardrail score failed:\n{plain.stderr[-3000:]}")
        want = [json.loads(line) for line in (folder / "plain.jsonl").read_text().splitlines()]
    got = [scored[i] for i in picked]
    summary = [line for line in ran.stderr.splitlines() if "rows/s" in line]
    result = {
        "benchmark": "guardrail score --ray (Ray Data actors) vs guardrail score",
        "rows": len(rows),
        "actors": args.actors,
        "rows_written": len(scored),
        "in_order": [r["id"] for r in scored] == list(range(len(rows))),
        "seconds_total": round(seconds, 1),
        "rows_per_s_total": round(len(rows) / seconds, 1),
        "cli_summary": summary[-1] if summary else None,
        "sample": len(picked),
        "sample_decisions_equal": [r["decision"] for r in got] == [r["decision"] for r in want],
        "sample_unscored_equal": [r["scores"] is None for r in got] == [r["scores"] is None for r in want],
        "sample_max_score_difference": max(
            abs(g["scores"][k] - w["scores"][k])
            for g, w in zip(got, want)
            if g["scores"] and w["scores"]
            for k in g["scores"]
        ),
    }
    publish(result, args.out)


if __name__ == "__main__":
    main()
