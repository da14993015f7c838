"""Compare training recipes on a validation split, then train the winner on the whole training split.

Each candidate is ``guardrail train`` with a few options changed from ``TrainConfig``'s defaults,
trained without a held-out share of the FULCRA training prompts (``--validation``, a fixed hash
rule independent of the test split) and measured on them. Candidates run in parallel processes
(one GPU is far from busy with one MiniLM run). The winner is chosen on the validation split
alone: most of issue 3's bars met, then the largest mean margin over the bars. The final run then
trains the winner (``--finals N``: the best N, in parallel) on the whole training split and measures
the fixed test split, once each.

Prints one JSON object: every candidate's validation metrics, the winner, and the final run's card
metrics. Models land under ``--out`` (``<name>/`` per candidate, ``final1/``, ``final2/``...).

    python benchmarks/train_sweep.py --device cuda --out out/sweep
    python benchmarks/train_sweep.py --device cpu --limit 64 --only defaults --out /tmp/s  # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench_check import cpu_name

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# Each candidate changes a few TrainConfig defaults; "defaults" is the shipped recipe.
CANDIDATES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "seed1": {"seed": 1},  # the same recipe, another seed: how far apart runs land by chance
    "epochs8": {"finetune_epochs": 8},
    "no_prompt_dropout": {"prompt_dropout": 0.0},
    "no_touche": {"touche": False},
    "plain_mse": {"opposed_weight": 1.0, "benign_weight": 1.0},
    "rank32": {"adapter_rank": 32, "adapter_alpha": 64.0},
    "lr5e-4_epochs8": {"finetune_lr": 5e-4, "finetune_epochs": 8},
    # FULCRA alone (both of its label sources): what Touché23 and the written examples add, with LoRA.
    "fulcra_only": {"touche": False, "written": False},
    # FULCRA alone, close to issue 3's untuned baseline: plain MSE, the prompt always shown.
    "fulcra_plain": {
        "touche": False,
        "written": False,
        "opposed_weight": 1.0,
        "benign_weight": 1.0,
        "prompt_dropout": 0.0,
    },
}

# Issue 3's bars, on the metrics guardrail eval reports.
BARS = {
    "pearson_mean_safety": 0.80,
    "pearson_mean_all": 0.72,
    "macro_f1_mean": 0.56,
    "auroc_opposed": 0.88,
    "allow_rate_clean": 0.96,
    "block_rate_opposed": 0.75,
}


def environment(device: str) -> dict[str, Any]:
    """Where the sweep ran: torch build, device, CPU and GPU names, CPU cores."""
    import torch

    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    return {"torch": torch.__version__, "device": device, "cpu": cpu_name(), "gpu": gpu, "cpu_count": os.cpu_count()}


def rank_key(metrics: dict[str, Any]) -> tuple[int, float]:
    """Bars met, then mean margin over the bars: the higher, the better."""
    margins = [(metrics.get(k) or 0.0) - bar for k, bar in BARS.items()]
    return sum(m >= 0 for m in margins), sum(margins) / len(margins)


def worker(args: argparse.Namespace) -> None:
    """One training run in this process (``--worker NAME --overrides JSON``)."""
    from guardrail._training.config import TrainConfig
    from guardrail._training.train import train

    name = args.worker
    cfg = TrainConfig(**json.loads(args.overrides), device=args.device, limit=args.limit,
                      validation=args.validation, evaluate=args.evaluate)  # fmt: skip
    train(args.data, args.out / name, cfg, progress=lambda msg: print(f"[{name}] {msg}", flush=True))


def spawn(name: str, overrides: dict[str, Any], args: argparse.Namespace, *, validation: float, evaluate: bool,
          threads: int) -> subprocess.Popen[bytes]:  # fmt: skip
    """Start ``worker`` for one recipe in its own process, its output in ``<out>/<name>.log``."""
    command = [sys.executable, __file__, "--worker", name, "--overrides", json.dumps(overrides),
               "--data", str(args.data), "--out", str(args.out), "--device", args.device,
               "--validation", str(validation)]  # fmt: skip
    if args.limit:
        command += ["--limit", str(args.limit)]
    if evaluate:
        command.append("--evaluate")
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    with (args.out / f"{name}.log").open("wb") as log:  # the child holds its own copy of the handle
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)


def tail(log: Path, lines: int = 25) -> str:
    return "\n".join(log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def card(args: argparse.Namespace, name: str) -> dict[str, Any] | None:
    file = args.out / name / "card.json"
    return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("out/sweep"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--validation", type=float, default=0.2, help="Share of FULCRA training prompts held out.")
    parser.add_argument("--only", default="", help="Comma-separated candidate names (default: all).")
    parser.add_argument("--limit", type=int, default=None, help="Smoke runs: first N examples per source.")
    parser.add_argument("--jobs", type=int, default=len(CANDIDATES), help="Candidates trained at once.")
    parser.add_argument(
        "--finals",
        type=int,
        default=1,
        help="Train the best N recipes on the whole training split (0: stop after the comparison).",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="Seconds the comparison may take; candidates still training then are stopped.",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--overrides", help=argparse.SUPPRESS)
    parser.add_argument("--evaluate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    names = [n for n in args.only.split(",") if n] or list(CANDIDATES)
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        parser.error(f"--only: unknown candidate {unknown[0]!r} (known: {', '.join(CANDIDATES)})")
    args.out.mkdir(parents=True, exist_ok=True)
    threads = max(1, (os.cpu_count() or 2) // min(args.jobs, len(names)))
    started = time.perf_counter()
    results: dict[str, Any] = {}
    pending = list(names)
    running: dict[str, tuple[subprocess.Popen[bytes], float]] = {}
    while pending or running:
        while pending and len(running) < args.jobs:
            name = pending.pop(0)
            proc = spawn(name, CANDIDATES[name], args, validation=args.validation, evaluate=False, threads=threads)
            running[name] = (proc, time.perf_counter())
        time.sleep(1)
        late = args.deadline is not None and time.perf_counter() - started > args.deadline
        for name, (proc, since) in list(running.items()):
            if proc.poll() is None and late:
                proc.kill()
                proc.wait()
            if proc.poll() is None:
                continue
            del running[name]
            found = card(args, name)
            results[name] = {
                "overrides": CANDIDATES[name],
                "returncode": proc.returncode,
                "seconds": round(time.perf_counter() - since, 1),
                "validation": found.get("validation_metrics") if found else None,
            }
            print(json.dumps({name: results[name]}), file=sys.stderr, flush=True)
            if proc.returncode:
                print(tail(args.out / f"{name}.log"), file=sys.stderr, flush=True)
        if late:
            results |= {n: {"overrides": CANDIDATES[n], "skipped": "deadline"} for n in pending}
            pending = []

    finished = {n: r for n, r in results.items() if r.get("validation")}
    report: dict[str, Any] = {
        "benchmark": "train_sweep",
        "environment": environment(args.device),
        "validation_share": args.validation,
        "bars": BARS,
        "candidates": results,
        "comparison_seconds": round(time.perf_counter() - started, 1),
    }
    if finished:
        ranked = sorted(finished, key=lambda n: rank_key(finished[n]["validation"]), reverse=True)
        report["ranking"] = [{"name": n, "bars_met_and_mean_margin": rank_key(finished[n]["validation"])}
                             for n in ranked]  # fmt: skip
        report["winner"] = ranked[0]
        # The best recipes on the whole training split, in parallel, each measured once on the test split.
        finals = {f"final{i + 1}": n for i, n in enumerate(ranked[: args.finals])}
        share = max(1, (os.cpu_count() or 2) // max(1, len(finals)))
        procs = {f: spawn(f, CANDIDATES[n], args, validation=0.0, evaluate=True, threads=share)
                 for f, n in finals.items()}  # fmt: skip
        report["finals"] = {}
        for final, proc in procs.items():
            proc.wait()
            if proc.returncode:
                print(tail(args.out / f"{final}.log"), file=sys.stderr, flush=True)
            done = card(args, final) or {}
            report["finals"][final] = {
                "recipe": finals[final],
                "returncode": proc.returncode,
                "train_seconds": done.get("train_seconds"),
                "calibration": done.get("calibration"),
                "metrics": done.get("metrics"),
            }
    report["total_seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
