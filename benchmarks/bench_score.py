"""Throughput of ``guardrail score`` on a file of 10,000 responses, printed as JSON.

    python benchmarks/bench_score.py [--n 10000] [--device auto] [--batch-size 64]

Writes a JSONL file of distinct (prompt, response) pairs (about 60 tokens each) to a temporary
folder, runs the real CLI on it in a subprocess (model loading included, and reported apart), and
checks that every line came back scored. Not a test: run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_check import PROMPT, RESPONSE_60, cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import torch

    cli = [sys.executable, "-m", "guardrail"]
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
        with source.open("w", encoding="utf-8") as f:
            for i in range(args.n):
                f.write(json.dumps({"id": i, "prompt": PROMPT, "response": f"{RESPONSE_60} (note {i})"}) + "\n")
        tiny = Path(tmp) / "one.jsonl"
        tiny.write_text(json.dumps({"prompt": PROMPT, "response": RESPONSE_60}) + "\n", encoding="utf-8")
        started = time.perf_counter()  # the fixed cost: interpreter, imports, model load
        subprocess.run([*cli, "score", str(tiny), str(Path(tmp) / "one.out"), "--device", args.device],
                       check=True, capture_output=True)  # fmt: skip
        fixed = time.perf_counter() - started
        started = time.perf_counter()
        subprocess.run([*cli, "score", str(source), str(target), "--device", args.device,
                        "--batch-size", str(args.batch_size)], check=True, capture_output=True)  # fmt: skip
        total = time.perf_counter() - started
        lines = target.read_text(encoding="utf-8").splitlines()
        assert len(lines) == args.n and all("scores" in json.loads(line) for line in lines)
    print(json.dumps({
        "benchmark": "score_file", "responses": args.n, "seconds_total": round(total, 1),
        "seconds_fixed": round(fixed, 1), "responses_per_s": round(args.n / (total - fixed), 1),
        "batch_size": args.batch_size, "device": args.device, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
