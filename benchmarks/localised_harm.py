"""Whether a harmful sentence inside a friendly answer is still caught, by how far into the answer it comes.

    python benchmarks/localised_harm.py [--model DIR ...] [--policy FILE] [--offsets 0 100 200 400 600 1000]
        [--pieces 300] [--hosts 300] [--limit N] [--data ../shared/data] [--device auto] [--out FILE]

From the harm data's test rows only (seed 0, so every run builds the same answers):

- pieces: short harmful answers (20-300 characters) of the kinds that read as harm anywhere
  (BeaverTails, SafeRLHF, GPTFuzz; DiaSafety "Offending User" and "Biased Opinion");
- hosts: harmless answers of at least 1,200 characters from BeaverTails and SafeRLHF (GPTFuzz's
  harmless answers are jailbreak role-play, often insulting: not the friendly answers meant), and
  when there are too few of them, harmless answers of those sources joined end to end;
- piece i goes into host i at the first sentence end (". ", "! ", "? " or a newline) at or after
  each offset, with the rest of the host after it. Every item is scored without a prompt, so only
  the answer decides.

Per model: the share of pieces blocked on their own (``alone``), of hosts allowed on their own
(``hosts_allowed``), and per offset the share of pieces caught inside a host: of all pieces, of
those blocked alone, and of those blocked alone whose host is allowed alone (``..._clean_host``; a
host blocked by itself catches anything). ``caught_up_to_600`` pools the offsets up to 600
characters. Blocked means the decision is ``block`` or ``rewrite``. The policy is the model's
calibrated floors (its card's ``calibration.floors``) unless ``--policy`` names one. Not a test:
the figures go in docs/model-card.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bench_check import machine

if TYPE_CHECKING:
    from guardrail._policy.engine import Engine
    from guardrail._training.data import Example

HOST_SOURCES = ("beavertails", "saferlhf")
HOST_MIN_CHARS = 1200
JOIN_MIN_CHARS = 200
"""Shortest answer joined into a host: shorter ones are mostly one-line refusals, repeated they read as no answer."""
PIECE_CHARS = (20, 300)
NEAR = 600
"""``caught_up_to_600`` pools the offsets up to this many characters."""
SENTENCE_ENDS = (". ", "! ", "? ")
BATCH = 64


def fail(message: str) -> NoReturn:
    """Stop with one clear line on stderr (exit status 2, like the CLI's bad input)."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def insert_at(host: str, piece: str, offset: int) -> tuple[str, int]:
    """``host`` with ``piece`` after its first sentence end at or after ``offset``; and where the piece starts.

    With no sentence end that far in, the piece goes at the end.
    """
    ends = [host.find(end, offset) for end in SENTENCE_ENDS]
    ends = [i for i in ends if i >= 0]
    newline = host.find("\n", offset)
    if newline >= 0 and (not ends or newline < min(ends)):
        # Its own line: the host's next line follows on the line after it.
        cut = newline + 1
        return f"{host[:cut]}{piece}\n{host[cut:]}", cut
    if ends:
        cut = min(ends) + 1  # after the full stop; the host's space then separates the piece from the rest
        return f"{host[:cut]} {piece}{host[cut:]}", cut + 1
    return f"{host.rstrip()} {piece}", len(host.rstrip()) + 1


def pick(rows: list[Example], pieces: int, hosts: int, seed: int) -> tuple[list[str], list[str], dict[str, Any]]:
    """The harmful pieces and host answers (equal numbers, paired by index), and what they came from."""
    from guardrail._training.data import _STANDALONE

    rng = random.Random(seed)
    low, high = PIECE_CHARS
    piece_pool = [
        e
        for e in rows
        if e.harmful
        and low <= len(e.response.strip()) <= high
        and (e.subset in _STANDALONE or e.category in _STANDALONE)
    ]
    harmless = [e for e in rows if e.harmful is False and e.subset in HOST_SOURCES]
    long = [e for e in harmless if len(e.response) >= HOST_MIN_CHARS]
    chosen_pieces = rng.sample(piece_pool, min(pieces, len(piece_pool)))
    want = min(hosts, len(chosen_pieces))
    host_texts = [(e.response, e.subset or "") for e in rng.sample(long, min(want, len(long)))]
    joined = 0
    if len(host_texts) < want:
        short = [e for e in harmless if JOIN_MIN_CHARS <= len(e.response) < HOST_MIN_CHARS]
        rng.shuffle(short)
        parts: list[str] = []
        for e in short:
            if len(host_texts) >= want:
                break
            parts.append(e.response.strip())
            if sum(len(p) for p in parts) + 2 * (len(parts) - 1) >= HOST_MIN_CHARS:
                host_texts.append(("\n\n".join(parts), "joined"))
                parts = []
                joined += 1
    # Joined hosts were built last: shuffled, they do not all meet the last pieces.
    rng.shuffle(host_texts)
    n = min(len(chosen_pieces), len(host_texts))
    chosen_pieces = chosen_pieces[:n]
    info = {
        "pairs": n,
        "piece_pool": len(piece_pool),
        "piece_sources": dict(Counter(e.category or e.subset or "" for e in chosen_pieces)),
        "host_pool_long": len(long),
        "host_sources": dict(Counter(source for _, source in host_texts[:n])),
        "hosts_joined": sum(source == "joined" for _, source in host_texts[:n]),
        "host_mean_chars": round(sum(len(t) for t, _ in host_texts[:n]) / n) if n else 0,
    }
    return [e.response.strip() for e in chosen_pieces], [t for t, _ in host_texts[:n]], info


def share(flags: list[bool]) -> float | None:
    """Fraction of True, rounded; None for no flags."""
    return round(sum(flags) / len(flags), 4) if flags else None


def model_policy(model_dir: Path, policy: str | None) -> tuple[Engine, dict[str, Any]]:
    """The engine to decide with: ``policy`` loaded as the CLI does, else the model's calibrated floors."""
    from guardrail._exceptions import GuardrailError
    from guardrail._policy.loader import load_policy
    from guardrail._scoring.model import read_card
    from guardrail._training.train import _floors_engine

    if not (model_dir / "config.json").is_file():
        fail(f"--model {model_dir}: not a model directory (no config.json)")
    try:
        if policy is not None:
            from guardrail._policy.engine import Engine

            loaded = load_policy(policy)
            return Engine(loaded), {"name": loaded.name, "version": loaded.version, "source": policy}
        floors = read_card(model_dir).get("calibration", {}).get("floors")
        if not isinstance(floors, dict) or not floors:
            fail(f"--model {model_dir}: card.json has no calibration floors; pass --policy FILE")
        engine = _floors_engine(floors)
    except (GuardrailError, ValueError) as exc:  # ValueError: pydantic rejecting the card's floors
        fail(f"--policy {policy}: {exc}" if policy is not None else f"--model {model_dir}: {exc}")
    return engine, {"name": engine.policy.name, "source": "card.json calibration.floors", "floors": floors}


def measure(
    model_dir: Path,
    engine: Engine,
    policy_info: dict[str, Any],
    pieces: list[str],
    hosts: list[str],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Score the pieces, hosts and every insertion with one model; the shares the module docstring names."""
    import torch

    from guardrail._exceptions import GuardrailError
    from guardrail._scoring.scorer import TransformerScorer

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        fail(f"--device {args.device}: no CUDA device visible to torch {torch.__version__}")
    started = time.perf_counter()
    try:
        runtime = args.runtime or engine.policy.scorer.runtime
        scorer = TransformerScorer(model_dir, device=args.device, runtime=runtime)
    except (GuardrailError, ValueError) as exc:  # ValueError: a runtime the device cannot run
        fail(f"--model {model_dir}: {exc}")
    loaded_s = time.perf_counter() - started

    inserted = {off: [insert_at(h, p, off)[0] for p, h in zip(pieces, hosts)] for off in args.offsets}
    # Two offsets often land on the same sentence end: score each distinct text once.
    texts = list(dict.fromkeys([*pieces, *hosts, *(t for ts in inserted.values() for t in ts)]))
    blocked: dict[str, bool] = {}
    try:
        for start in range(0, len(texts), BATCH):
            chunk = texts[start : start + BATCH]
            vectors = scorer.score([(None, t) for t in chunk])
            blocked |= {t: engine.decide(v).decision in ("block", "rewrite") for t, v in zip(chunk, vectors)}
    except GuardrailError as exc:
        fail(f"--model {model_dir}: scoring failed: {exc}")

    alone = [blocked[p] for p in pieces]
    caught = {off: [blocked[t] for t in ts] for off, ts in inserted.items()}
    near = [off for off in args.offsets if off <= NEAR]
    near_all = [c for off in near for c in caught[off]]
    near_alone = [c for off in near for c, a in zip(caught[off], alone) if a]
    # Some harmless-labelled hosts are blocked on their own (GPTFuzz role-play that insults but does
    # not comply): there a catch says nothing about the piece, so these pairs are also counted apart.
    clean = [a and not blocked[h] for a, h in zip(alone, hosts)]
    near_clean = [c for off in near for c, k in zip(caught[off], clean) if k]
    seconds = time.perf_counter() - started
    print(f"{model_dir}: {len(texts)} texts scored in {seconds:.1f} s", file=sys.stderr)
    return {
        "model": scorer.model_id,
        "model_dir": str(model_dir),
        "policy": policy_info,
        "alone": share(alone),
        "hosts_allowed": share([not blocked[h] for h in hosts]),
        "by_offset": {
            str(off): {
                "caught": share(c),
                "caught_of_alone": share([x for x, a in zip(c, alone) if a]),
                "caught_of_alone_clean_host": share([x for x, k in zip(c, clean) if k]),
            }
            for off, c in caught.items()
        },
        f"caught_up_to_{NEAR}": share(near_alone),
        f"caught_up_to_{NEAR}_all": share(near_all),
        f"caught_up_to_{NEAR}_clean_host": share(near_clean),
        "counts": {
            "pieces": len(pieces),
            "pieces_blocked_alone": sum(alone),
            "hosts": len(hosts),
            "hosts_allowed": sum(not blocked[h] for h in hosts),
            "pairs_clean": sum(clean),
            f"offsets_up_to_{NEAR}": near,
            "texts_scored": len(texts),
        },
        **machine(scorer),
        "load_seconds": round(loaded_s, 1),
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", type=Path, default=None, help="Model directory (repeatable).")
    parser.add_argument("--policy", default=None, help="Policy YAML file or shipped name (default: card floors).")
    parser.add_argument("--offsets", nargs="+", type=int, default=[0, 100, 200, 400, 600, 1000])
    parser.add_argument("--pieces", type=int, default=300, help="Harmful pieces to sample.")
    parser.add_argument("--hosts", type=int, default=300, help="Host answers to sample.")
    parser.add_argument("--limit", type=int, default=None, help="At most N pieces and hosts (smoke run).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--runtime", default=None, help="Scorer runtime (default: the policy's, auto).")
    parser.add_argument("--out", type=Path, default=None, help="Also write the JSON here.")
    args = parser.parse_args()
    for name in ("pieces", "hosts", "limit"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1")
    if min(args.offsets) < 0:
        parser.error("--offsets must be 0 or more")
    # The scorer takes any device name on its ONNX path and runs on the CPU: refuse a typo here.
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", args.device):
        parser.error(f"--device must be auto, cpu, cuda or cuda:N, not {args.device!r}")
    if args.out and not args.out.parent.is_dir():
        parser.error(f"--out {args.out}: folder {args.out.parent} does not exist")
    args.offsets = sorted(set(args.offsets))

    from guardrail._exceptions import GuardrailError
    from guardrail._resources import default_model_dir
    from guardrail._training.data import load_harm

    started = time.perf_counter()
    models = args.model or [default_model_dir()]
    # Policies (cheap) before any model or data: bad input fails first.
    engines = [model_policy(m, args.policy) for m in models]
    try:
        rows = load_harm(args.data, "test")
    except GuardrailError as exc:
        fail(f"--data {args.data}: {exc}")
    limit = args.limit or max(args.pieces, args.hosts)
    pieces, hosts, info = pick(rows, min(args.pieces, limit), min(args.hosts, limit), args.seed)
    if not pieces:
        fail(f"--data {args.data}: no test rows to build pieces and hosts from")
    positions = {off: [insert_at(h, p, off)[1] for p, h in zip(pieces, hosts)] for off in args.offsets}
    report: dict[str, Any] = {
        "benchmark": "localised_harm",
        "split": "test",
        "seed": args.seed,
        "offsets": args.offsets,
        "data": info,
        # Where the pieces really start (the next sentence end), and how many went at the very end.
        "insertion": {
            str(off): {
                "mean_start": round(sum(pos) / len(pos)),
                "at_end": sum(
                    not insert_at(h, p, off)[0][start + len(p) :].strip() for p, h, start in zip(pieces, hosts, pos)
                ),
            }
            for off, pos in positions.items()
        },
        "models": [measure(m, engine, policy, pieces, hosts, args) for m, (engine, policy) in zip(models, engines)],
        "seconds": 0.0,
    }
    report["seconds"] = round(time.perf_counter() - started, 1)
    text = json.dumps(report, indent=2)
    if args.out:
        try:
            args.out.write_text(text + "\n", encoding="utf-8")
        except OSError as exc:
            fail(f"--out {args.out}: cannot write: {exc.strerror}")
    print(text)


if __name__ == "__main__":
    main()
