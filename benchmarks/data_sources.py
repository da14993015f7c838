"""What each training source adds, and what the harm loss and its weighting buy: heads over the frozen encoder.

    python benchmarks/data_sources.py [--data ../shared/data] [--device cpu] [--cache FILE] [--out FILE]
                                      [--markdown] [--test] [--limit N]

Fine-tuning the encoder for every combination costs hours on a CPU, so the comparison is made where
it is cheap and fair: the frozen base encoder's features of every row are computed once (cached in
``--cache``, keyed by the data file hashes and each group's texts, so a rerun skips the encoder) and
a head is fitted for each report row with ``guardrail train``'s stage-one settings (seconds each).

Report rows:

- sources: FULCRA only (evaluator scores + human-checked rows), + Touché23, + written (the project's
  examples and their two-part answers), + each harm source alone, + all harm, all harm - each source,
  all sources (+ the harm two-part answers: the default config).
- loss, on all sources: harm_weight 0 / 0.5 / 1 / 2, harm_margin 0.1 / 0.2 / 0.3, harm rows as a
  regression target instead of the hinge, and no harm data at all (the recipe before it).

Figures are on validation rows only: 10 % of the FULCRA training prompts (the validation rule, held
out for this benchmark) and the harm training rows ``guardrail train`` holds out. Each row's floors
are calibrated on those rows the way ``guardrail train`` calibrates (at most 2 % of clean FULCRA
answers and 5 % of harmless harm answers blocked, as many harmful ones as possible). Every answer is
scored by its first window's features through the head: frozen first-window features; spans and
fine-tuning not included, so the figures rank sources and losses, not shipped models.

``--test`` also measures "FULCRA only" and "all sources" once on the test rows (FULCRA's fixed test
split, the harm files' test rows) with the floors from validation. Never choose anything on it.

Prints one JSON object (``--out`` writes it too); ``--markdown`` prints a compact table instead.
``--limit N`` keeps the first N rows of each source and part (smoke runs; use another ``--cache``).
``--threads 1`` fits much faster on a CPU another job keeps busy (OpenMP threads wait for each other).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_check import cpu_name

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

VALIDATION_SHARE = 0.1
"""Share of FULCRA training prompts held out here (by the validation rule) to measure on."""
SCORING = "frozen first-window features; spans and fine-tuning not included"
FULCRA_KEYS = ("pearson_mean_safety", "pearson_mean_all", "macro_f1_mean", "auroc_opposed", "allow_rate_clean",
               "block_rate_opposed", "n")  # fmt: skip
FULCRA = ("evaluator", "trustworthy")
BASE = (*FULCRA, "touche", "written", "written_two_part")
ALL = (*BASE, "harm", "harm_two_part")


@dataclass(frozen=True)
class Row:
    """One report row: the training groups a head is fitted on, and how."""

    name: str
    kind: str
    """``sources`` (what a source adds) or ``loss`` (what a loss or weighting choice buys)."""
    groups: tuple[str, ...]
    harm: tuple[str, ...] = ()
    """Harm sources whose trained rows the ``harm`` group keeps."""
    overrides: tuple[tuple[str, Any], ...] = ()
    """``TrainConfig`` fields changed from the defaults."""
    regression: bool = False
    """Harm rows as regression targets on the safety values instead of the hinge."""
    note: str = ""


def plan(sources: tuple[str, ...]) -> list[Row]:
    """The report rows, in order."""
    rest = lambda s: tuple(x for x in sources if x != s)  # noqa: E731
    harm = (*BASE, "harm")
    return [
        Row("FULCRA only", "sources", FULCRA, note="evaluator scores + human-checked (trustworthy) training rows"),
        Row("+ Touché23", "sources", (*FULCRA, "touche")),
        Row("+ written", "sources", BASE, note="the project's examples and their two-part answers"),
        *[Row(f"+ {s}", "sources", harm, (s,), note=f"+ written + the {s} harm rows") for s in sources],
        Row("+ all harm", "sources", harm, sources, note="+ written + every harm source, no harm two-part answers"),
        *[Row(f"all harm - {s}", "sources", harm, rest(s)) for s in sources],
        Row("all sources", "sources", ALL, sources, note="+ the harm two-part answers: the default config"),
        Row("harm_weight 0", "loss", ALL, sources, (("harm_weight", 0.0),),
            note="regression only: harm rows teach nothing (they only shift the feature standardisation)"),
        Row("harm_weight 0.5", "loss", ALL, sources, (("harm_weight", 0.5),)),
        Row("harm_weight 1", "loss", ALL, sources, (("harm_weight", 1.0),)),
        Row("harm_weight 2", "loss", ALL, sources, (("harm_weight", 2.0),)),
        Row("harm_margin 0.1", "loss", ALL, sources, (("harm_margin", 0.1),)),
        Row("harm_margin 0.2", "loss", ALL, sources, (("harm_margin", 0.2),)),
        Row("harm_margin 0.3", "loss", ALL, sources, (("harm_margin", 0.3),)),
        Row("harm as regression", "loss", ALL, sources, (("harm_weight", 0.0),), regression=True,
            note="harm rows as regression targets (the four safety values -1 if harmful, 0 if harmless); no hinge"),
        Row("no harm data", "loss", BASE, (), (("harm", False),),
            note="no harm rows and no hinge (FULCRA's and written's harm labels unused): the recipe before"),
    ]  # fmt: skip


def progress(message: str) -> None:
    """A progress line on stderr (stdout carries the result)."""
    print(message, file=sys.stderr, flush=True)


def load_groups(data: Path, cfg: Any, limit: int | None, test: bool) -> dict[str, list[Any]]:
    """Every example the report encodes, by group: training groups, ``val_*`` and (``test``) ``test_*``."""
    from guardrail._training.data import (
        load_evaluator,
        load_harm,
        load_touche,
        load_trustworthy,
        load_written,
        mix_harm,
        mix_written,
    )
    from guardrail._training.train import _harm_rows, _hold_out

    def first(rows: list[Any]) -> list[Any]:
        return rows[:limit]

    def per_source(rows: list[Any]) -> list[Any]:
        seen: dict[str | None, int] = {}
        kept = []
        for e in rows:
            seen[e.subset] = seen.get(e.subset, 0) + 1
            if limit is None or seen[e.subset] <= limit:
                kept.append(e)
        return kept

    evaluator, trustworthy = load_evaluator(data), load_trustworthy(data)
    # Split first and limit each part, so a smoke run still has validation rows.
    ev_train, ev_val = _hold_out([e for e in evaluator if not e.test], VALIDATION_SHARE)
    tw_train, tw_val = _hold_out([e for e in trustworthy if not e.test], VALIDATION_SHARE)
    harm, harm_val = (per_source(rows) for rows in _harm_rows(data, cfg))
    written = first(load_written())
    groups = {
        "evaluator": first(ev_train),
        "trustworthy": first(tw_train),
        "touche": first(load_touche(data)),
        "written": written,
        "written_two_part": mix_written(written, cfg.seed),
        "harm": harm,
        "harm_two_part": mix_harm(harm, cfg.harm_mix if limit is None else min(cfg.harm_mix, limit), cfg.seed),
        "val_evaluator": first(ev_val),
        "val_trustworthy": first(tw_val),
        "val_harm": harm_val,
    }
    if test:
        groups |= {
            "test_evaluator": first([e for e in evaluator if e.test]),
            "test_trustworthy": first([e for e in trustworthy if e.test]),
            "test_harm": per_source(load_harm(data, "test")),
        }
    return groups


def _digest(rows: list[Any]) -> str:
    return hashlib.sha256(json.dumps([[e.prompt, e.response] for e in rows]).encode("utf-8")).hexdigest()


def encode(groups: dict[str, list[Any]], scorer: Any, cache: Path, header: dict[str, Any]) -> dict[str, Any]:
    """First-window features of every group, from ``cache`` where its header and the group's texts match."""
    import torch

    key = json.dumps(header, sort_keys=True)
    stored: dict[str, Any] = {}
    try:
        blob = torch.load(cache, weights_only=True)
        if isinstance(blob, dict) and blob.get("header") == key:
            stored = blob["groups"]
        else:
            progress(f"{cache}: made from other data or settings; encoding afresh")
    except FileNotFoundError:
        pass
    except Exception:  # a torn or foreign file only costs the encoding
        progress(f"{cache}: not a feature cache this script wrote; encoding afresh")
    features, changed = {}, False
    for name, rows in groups.items():
        digest = _digest(rows)
        hit = stored.get(name)
        if hit is not None and hit["digest"] == digest:
            features[name] = hit["features"]
            continue
        started = time.perf_counter()
        items = [(e.prompt, e.response) for e in rows]
        chunks = [scorer.features(items[i : i + 256]) for i in range(0, len(items), 256)]
        features[name] = torch.cat(chunks) if chunks else torch.zeros(0, 0)
        stored[name] = {"digest": digest, "features": features[name]}
        changed = True
        progress(f"encoded {name}: {len(rows)} rows in {time.perf_counter() - started:.0f}s")
    if changed:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"header": key, "groups": stored}, cache)
        except OSError as exc:
            progress(f"{cache}: cannot write the feature cache ({exc.strerror}); the next run encodes again")
    return features


class Precomputed:
    """A scorer that answers from scores computed beforehand (a head over cached first-window features)."""

    device = "cpu"

    def __init__(self, model_id: str, vectors: dict[tuple[str | None, str], Any]) -> None:
        self.model_id = model_id
        self._vectors = vectors

    def score(self, items: Any) -> list[Any]:
        """The stored vector of each (prompt, response) pair."""
        return [self._vectors[(prompt, response)] for prompt, response in items]

    async def ascore(self, items: Any) -> list[Any]:
        """Same as :meth:`score`."""
        return self.score(items)


def fit(row: Row, groups: dict[str, list[Any]], features: dict[str, Any], cfg: Any) -> tuple[Any, dict[str, int]]:
    """The head of ``row``, fitted as ``guardrail train``'s stage one fits it, and its training rows by source."""
    import torch

    from guardrail._training.data import harm_label
    from guardrail._training.train import _SAFETY_COLUMNS, _fit_head, _loss_weights
    from guardrail._values import NO_CONNECTION

    examples, parts = [], []
    for name in row.groups:
        rows, feats = groups[name], features[name]
        if name == "harm":
            keep = [i for i, e in enumerate(rows) if e.subset in row.harm]
            rows, feats = [rows[i] for i in keep], feats[keep] if keep else feats[:0]
        if rows:
            examples += rows
            parts.append(feats)
    targets = torch.tensor([e.target for e in examples], dtype=torch.float32)
    harm_rows = torch.tensor([e.source == "harm" for e in examples]).nonzero().squeeze(1)
    if row.regression:
        label = torch.tensor([-1.0 if examples[i].harmful else 0.0 for i in harm_rows.tolist()])
        for column in _SAFETY_COLUMNS:
            targets[harm_rows, column] = label
    weights = _loss_weights(examples, targets, cfg)
    if row.regression:
        # _loss_weights gives harm rows no regression weight; here they get what any other row gets.
        weights[harm_rows] = torch.where(targets[harm_rows] < -NO_CONNECTION, cfg.opposed_weight, 1.0)
        weights = torch.where(targets.isnan(), 0.0, weights)
    labels = [harm_label(e) for e in examples]
    harmful = torch.tensor([math.nan if x is None else float(x) for x in labels], dtype=torch.float32)
    if not cfg.harm:
        harmful = torch.full_like(harmful, math.nan)
    head = _fit_head(torch.cat(parts), targets.nan_to_num(0.0), weights, harmful, cfg)
    counts: dict[str, int] = {}
    for e in examples:
        key = f"harm_{e.subset}" if e.source == "harm" else e.source
        counts[key] = counts.get(key, 0) + 1
    return head, counts


def scorer_for(head: Any, names: list[str], groups: dict[str, list[Any]], features: dict[str, Any]) -> Precomputed:
    """``head``'s scores of the rows of ``names``, as a scorer the evaluation functions accept."""
    import torch

    from guardrail._values import ValueVector

    vectors = {}
    with torch.inference_mode():
        for name in names:
            if not groups[name]:
                continue
            for e, scores in zip(groups[name], head(features[name]).tolist()):
                vectors[(e.prompt, e.response)] = ValueVector.from_sequence(scores)
    return Precomputed("frozen-ablation", vectors)


def measure(scorer: Precomputed, floors: dict[str, float], groups: dict[str, list[Any]], part: str) -> dict[str, Any]:
    """FULCRA and harm metrics of ``scorer`` with ``floors`` on the ``part`` rows (``val`` or ``test``)."""
    from guardrail._training.train import validation_metrics

    metrics = validation_metrics(scorer, floors, groups[f"{part}_evaluator"], groups[f"{part}_trustworthy"],
                                 groups[f"{part}_harm"])  # fmt: skip
    return {"fulcra": {k: metrics[k] for k in FULCRA_KEYS if k in metrics}, "harm": metrics.get("harm")}


def _cell(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown(result: dict[str, Any], sources: tuple[str, ...]) -> str:
    """The report as compact Markdown tables (validation rows; test rows apart)."""
    head = ["row", "r safety", "r all", "AUROC FULCRA", "harm AUROC", "harm F1", "harm FPR",
            *[f"F1 {s}" for s in sources]]  # fmt: skip

    def table(rows: list[dict[str, Any]], metrics: str) -> list[str]:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            fulcra, harm = row[metrics]["fulcra"], row[metrics]["harm"] or {}
            pooled = harm.get("pooled", {})
            cells = [row["name"], _cell(fulcra.get("pearson_mean_safety")), _cell(fulcra.get("pearson_mean_all")),
                     _cell(fulcra.get("auroc_opposed")), _cell(pooled.get("auroc")), _cell(pooled.get("f1")),
                     _cell(pooled.get("fpr")), *[_cell(harm.get(s, {}).get("f1")) for s in sources]]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        return lines

    lines = [f"Validation rows ({result['config']['scoring']}):", "", *table(result["rows"], "validation")]
    if result.get("test"):
        lines += ["", "TEST rows (measured once; never choose on them):", "", *table(result["test"], "test")]
    return "\n".join(lines)


def main() -> None:
    """Parse the command line, run the report, print it."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/data_sources_features.pt"))
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    parser.add_argument("--markdown", action="store_true", help="print compact tables instead of the JSON")
    parser.add_argument("--test", action="store_true", help="also measure two rows once on the test rows")
    parser.add_argument("--limit", type=int, help="first N rows of each source and part (smoke runs; N >= 8)")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 fits faster on a busy CPU)")
    args = parser.parse_args()
    if args.limit is not None and args.limit < 8:
        parser.error(f"--limit must be at least 8, got {args.limit}")
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.out is not None and not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: folder {args.out.parent} does not exist")
    from guardrail._exceptions import GuardrailError

    try:
        result = run(args)
    except GuardrailError as exc:
        sys.exit(f"error: {exc}")
    text = json.dumps(result, indent=2)
    if args.out is not None:
        try:
            args.out.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            sys.exit(f"error: --out {args.out}: {exc.strerror}")
    from guardrail._training.data import HARM_SOURCES

    print(markdown(result, HARM_SOURCES) if args.markdown else text)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole report as a JSON-ready dict."""
    import torch

    from guardrail._scoring.model import ModelConfig
    from guardrail._scoring.scorer import TransformerScorer
    from guardrail._training.config import TrainConfig
    from guardrail._training.data import HARM_SOURCES, file_hashes
    from guardrail._training.train import calibration

    started = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.data.is_dir():
        raise SystemExit(f"error: --data {args.data}: not a folder (point it at shared/data)")
    base = TrainConfig(adapter_rank=0)
    groups = load_groups(args.data, base, args.limit, args.test)
    model_cfg = ModelConfig(
        model_id="frozen-ablation", encoder=base.encoder, layers=base.layers, hidden=base.hidden,
        max_length=base.max_length, prompt_tokens=base.prompt_tokens, window_overlap=base.window_overlap,
        span_tokens=0, adapter=None,
    )  # fmt: skip
    hashes = file_hashes(args.data, touche=True, written=True, harm=True)
    scorer = TransformerScorer(config=model_cfg, device=args.device)
    header = {"files": hashes, "model": model_cfg.model_dump(mode="json")}
    features = encode(groups, scorer, args.cache, header)
    encoded = time.perf_counter() - started

    rows, fitted, heads = [], {}, {}
    for row in plan(HARM_SOURCES):
        cfg = TrainConfig(**{**base.model_dump(), **dict(row.overrides)})
        key = json.dumps([row.groups, row.harm if "harm" in row.groups else (), row.regression,
                          cfg.model_dump(mode="json")])  # fmt: skip
        entry: dict[str, Any] = {"name": row.name, "kind": row.kind, "note": row.note,
                                 "overrides": dict(row.overrides)}  # fmt: skip
        if key in fitted:  # the same head as an earlier row (a default written out as a sweep point)
            rows.append(
                entry | {k: v for k, v in fitted[key].items() if k not in entry} | {"same_as": fitted[key]["name"]}
            )
            heads[row.name] = heads[fitted[key]["name"]]
            continue
        fit_started = time.perf_counter()
        head, counts = fit(row, groups, features, cfg)
        fake = scorer_for(head, ["val_evaluator", "val_trustworthy", "val_harm"], groups, features)
        calibrated = calibration(fake, groups["val_evaluator"], groups["val_harm"], cfg, lambda _: None)
        floors = calibrated["floors"]
        clean_pass = calibrated["train_clean_pass"]
        entry |= {
            "train_examples": counts,
            "floors": floors,
            "calibration": {"fulcra_clean_blocked": None if clean_pass is None else round(1 - clean_pass, 4),
                            "fulcra_opposed_blocked": calibrated["train_block_opposed"],
                            "harm_harmless_blocked": calibrated["harm_validation"]["harmless_blocked"],
                            "harm_harmful_blocked": calibrated["harm_validation"]["harmful_blocked"]},
            "validation": measure(fake, floors, groups, "val"),
            "fit_seconds": round(time.perf_counter() - fit_started, 1),
        }  # fmt: skip
        fitted[key], heads[row.name] = entry, head
        rows.append(entry)
        pooled = (entry["validation"]["harm"] or {}).get("pooled", {})
        progress(f"{row.name}: r safety {entry['validation']['fulcra'].get('pearson_mean_safety')}, "
                 f"harm AUROC {pooled.get('auroc')}, F1 {pooled.get('f1')} ({entry['fit_seconds']}s)")  # fmt: skip

    test = []
    if args.test:
        for name in ("FULCRA only", "all sources"):
            fake = scorer_for(heads[name], ["test_evaluator", "test_trustworthy", "test_harm"], groups, features)
            floors = next(r["floors"] for r in rows if r["name"] == name)
            test.append(
                {"name": name, "split": "test", "floors": floors, "test": measure(fake, floors, groups, "test")}
            )

    sizes = {name: len(rows_) for name, rows_ in groups.items()}
    return {
        "benchmark": "data_sources",
        "config": {
            "scoring": SCORING,
            "head": "frozen base encoder, stage-one head (guardrail._training.train._fit_head), TrainConfig defaults "
            "but for each row's overrides",
            "encoder": base.encoder,
            "loss": "every row but 'no harm data' puts the harm hinge on each training row with a harm label "
            "(guardrail._training.data.harm_label: FULCRA's and written rows too, not only the harm files')",
            "validation": f"FULCRA: {VALIDATION_SHARE:.0%} of the training prompts by the validation rule, held out "
            f"of every row's training; harm: the {base.harm_validation:.0%} of harm training prompts guardrail "
            "train holds out",
            "floors": "calibrated per row on the validation rows (guardrail._training.train.calibration): at most "
            f"{1 - base.clean_pass_rate:.0%} of clean FULCRA answers and {base.harmless_block_rate:.0%} of harmless "
            "harm answers blocked, as many harmful ones (FULCRA benevolence or universalism < -0.5, harm-labelled) "
            "blocked as those allow; the figures are on the same rows",
            "train_config": base.model_dump(mode="json"),
            "limit": args.limit,
            "rows": sizes,
            "files": hashes,
        },
        "rows": rows,
        "test": test,
        "torch": torch.__version__,
        "device": scorer.device,
        "threads": torch.get_num_threads(),
        "machine": cpu_name() if scorer.device == "cpu" else torch.cuda.get_device_name(),
        "platform": platform.platform(),
        "encode_seconds": round(encoded, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }


if __name__ == "__main__":
    main()
