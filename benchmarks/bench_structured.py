"""Does a structured answer decide as its content would? Printed as JSON.

    python benchmarks/bench_structured.py [--per-label 150] [--max-chars 600] [--seed 0] [--out FILE]

Takes labelled LLM answers from the harm *train* split (BeaverTails and PKU-SafeRLHF QA pairs,
``../shared/data/harm``, or ``$GUARDRAIL_DATA/harm``), as many harmful as harmless, and checks
each under the default policy three ways: as the plain answer, as a tool call carrying it
(``send_message({"text": ...})``, what both integrations check a tool call as) and as a JSON
document (``{"answer": ...}``, structured output). The wrapped forms are checked twice: read as
they are, and read as prose (the reader's ``structured`` step, the default). The figures: how
often a wrapped answer's decision (altered or not) agrees with the plain answer's, and the block
rate on harmful and on harmless answers for each form.

Not a test: the figures go into the closing note and docs/limits.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("beavertails.jsonl", "saferlhf.jsonl")


def sample(data: Path, per_label: int, max_chars: int, seed: int) -> list[dict[str, Any]]:
    """``per_label`` harmful and as many harmless train answers, seeded, each cut to ``max_chars``."""
    rows = []
    for name in SOURCES:
        with (data / "harm" / name).open(encoding="utf-8") as f:
            rows += [r for r in map(json.loads, f) if r["split"] == "train" and r["response"].strip()]
    rng = random.Random(seed)
    picked = []
    for harmful in (True, False):
        group = [r for r in rows if r["harmful"] is harmful]
        picked += rng.sample(group, per_label)
    for row in picked:
        row["response"] = row["response"][:max_chars]
    return picked


def forms(response: str) -> dict[str, str]:
    """The answer as a tool call and as a JSON document."""
    return {
        "tool_call": f"send_message({json.dumps({'text': response}, ensure_ascii=False)})",
        "json": json.dumps({"answer": response}, ensure_ascii=False),
    }


def rates(altered: list[bool], harmful: list[bool]) -> dict[str, float]:
    on_harmful = [a for a, h in zip(altered, harmful, strict=True) if h]
    on_harmless = [a for a, h in zip(altered, harmful, strict=True) if not h]
    return {
        "blocked_harmful": round(sum(on_harmful) / len(on_harmful), 3),
        "blocked_harmless": round(sum(on_harmless) / len(on_harmless), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-label", type=int, default=150)
    parser.add_argument("--max-chars", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    import guardrail._guard.reading as reading
    from guardrail import Guard

    data = Path(os.environ.get("GUARDRAIL_DATA") or ROOT.parent / "shared" / "data")
    rows = sample(data, args.per_label, args.max_chars, args.seed)
    harmful = [bool(r["harmful"]) for r in rows]
    guard = Guard("default")
    start = time.perf_counter()

    def altered(responses: list[str]) -> list[bool]:
        items = [(r["prompt"], text) for r, text in zip(rows, responses, strict=True)]
        verdicts = [guard.check(text, prompt=prompt) for prompt, text in items]
        return [v.final_decision in ("block", "rewrite") for v in verdicts]

    plain = altered([r["response"] for r in rows])
    result: dict[str, Any] = {"plain": rates(plain, harmful), "forms": {}}
    reads_as_prose = reading.prose
    for name in ("tool_call", "json"):
        wrapped = [forms(r["response"])[name] for r in rows]
        figures = {}
        for label, prose in (("as_prose", reads_as_prose), ("as_is", lambda text: None)):
            reading.prose = prose  # the reader's structured step on, or off
            try:
                decided = altered(wrapped)
            finally:
                reading.prose = reads_as_prose
            agree = sum(a == b for a, b in zip(decided, plain, strict=True)) / len(plain)
            figures[label] = {"agrees_with_plain": round(agree, 3), **rates(decided, harmful)}
        result["forms"][name] = figures
    result |= {
        "answers": len(rows),
        "per_label": args.per_label,
        "max_chars": args.max_chars,
        "seed": args.seed,
        "sources": [f"harm/{s} (train split)" for s in SOURCES],
        "policy": f"{guard.policy.name} v{guard.policy.version}",
        "seconds": round(time.perf_counter() - start, 1),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
