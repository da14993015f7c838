"""Re-scoring recorded answers at scale: ``guardrail score --ray`` on Ray Data scorer actors.

Rows travel as JSON text (any fields, any shapes: nothing is inferred into a table schema). Each
actor builds its guard once (model and policy) and checks a batch at a time with ``check_many``,
so a row's result is exactly what ``guardrail score`` gives it; the results come back in input
order and are written by the caller.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Rescored:
    """One row back from the actors: its number, its JSON with the verdict added, and its error."""

    number: int
    row: dict[str, Any]
    error: str | None


class _Checker:
    """A Ray Data actor: one guard (model and policy), reused for every batch it is given."""

    def __init__(self, policy: str, model: str | None, device: str, decide: bool, per_row_ms: float | None,
                 threads: int) -> None:  # fmt: skip
        import torch

        from guardrail._guard.guard import Guard
        from guardrail._policy.loader import load_policy
        from guardrail._scoring.scorer import TransformerScorer

        torch.set_num_threads(threads)
        loaded = load_policy(policy)  # the scorer as guardrail score builds it: the policy's runtime
        self.guard = Guard(loaded, TransformerScorer(model, device=device, runtime=loaded.scorer.runtime))
        self.decide = decide
        self.per_row_ms = per_row_ms if per_row_ms is not None else self.guard.policy.timeout_ms

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        rows = [json.loads(text) for text in batch["row"]]
        verdicts = self.guard.check_many(
            [r["response"] for r in rows], [r.get("prompt") for r in rows], timeout_ms=self.per_row_ms * len(rows)
        )
        out, errors = [], []
        for row, verdict in zip(rows, verdicts):
            scored_row(row, verdict.to_dict(), verdict.error, decide=self.decide)
            out.append(json.dumps(row, ensure_ascii=False))
            errors.append(verdict.error or "")
        return {"number": list(batch["number"]), "row": out, "error": errors}


def scored_row(row: dict[str, Any], verdict: dict[str, Any], error: str | None, *, decide: bool) -> None:
    """Add a verdict's JSON to a row: its scores and error, and with a policy its decision (none when it failed)."""
    row["scores"] = verdict["scores"]
    row["error"] = error
    if decide:
        # A row that was not scored was not decided either: no on_error block written as if it were.
        row["decision"] = None if error is not None else verdict["decision"]
        row["violations"] = None if error is not None else verdict["violations"]


def rescore(
    rows: Iterable[tuple[int, dict[str, Any]]],
    *,
    policy: str,
    decide: bool,
    model: str | None = None,
    device: str = "auto",
    actors: int = 1,
    batch_size: int = 256,
    per_row_ms: float | None = None,
    address: str | None = None,
) -> Iterator[Rescored]:
    """Check every ``(number, row)`` on ``actors`` Ray Data actors; the results in input order.

    Starts a local Ray instance unless ``address`` (or ``$RAY_ADDRESS``) names a cluster. CUDA
    actors take one GPU each; CPU actors share the machine's cores between them.
    """
    import os

    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    gpus = 1 if device.startswith("cuda") else 0
    cpus = max(1, int(ray.available_resources().get("CPU", os.cpu_count() or 1)) // max(actors, 1))
    data = ray.data.from_items([{"number": n, "row": json.dumps(row, ensure_ascii=False)} for n, row in rows])
    scored = data.map_batches(
        _Checker,
        fn_constructor_kwargs={
            "policy": policy,
            "model": model,
            "device": device,
            "decide": decide,
            "per_row_ms": per_row_ms,
            "threads": cpus,
        },
        batch_size=batch_size,
        batch_format="numpy",
        concurrency=actors,
        num_cpus=0 if gpus else cpus,
        num_gpus=gpus,
    )
    for batch in scored.iter_batches(batch_size=batch_size, batch_format="numpy"):
        for number, text, error in zip(batch["number"], batch["row"], batch["error"]):
            yield Rescored(int(number), json.loads(text), str(error) or None)
