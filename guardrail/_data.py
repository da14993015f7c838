"""Training and evaluation data: FULCRA readers and the fixed test split.

Data lives outside the repository (default ``../shared/data``) and is read by path; only what is
trained from it ships. See that folder's README for the file formats.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from guardrail._exceptions import DataError
from guardrail._values import VALUES

SPLIT_RULE = 'test = int(sha1(prompt.strip().lower().encode("utf-8")).hexdigest(), 16) % 5 == 0'
"""The fixed held-out split (from the data README); rows whose prompt is in it are never trained on."""

Source = Literal["evaluator", "trustworthy"]


def is_test(prompt: str) -> bool:
    """Whether ``prompt`` falls in the fixed test split."""
    return int(hashlib.sha1(prompt.strip().lower().encode("utf-8")).hexdigest(), 16) % 5 == 0


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled (prompt, response) pair; ``target`` has ten scores in [-1, 1]."""

    prompt: str
    response: str
    target: tuple[float, ...]
    source: Source
    origin: str
    """``file:line`` the example came from."""

    @property
    def test(self) -> bool:
        """Whether the example is in the fixed test split."""
        return is_test(self.prompt)


def _lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror}") from exc
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{number}: invalid JSON: {exc.msg}") from exc
            if not isinstance(row, dict):
                raise DataError(f"{path}:{number}: expected a JSON object")
            yield number, row


def evaluator_files(data_dir: Path) -> list[Path]:
    """The FULCRA evaluator score files, sorted (one per answering LLM)."""
    folder = data_dir / "fulcra" / "evaluator_scores"
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise DataError(f"{folder}: no *.jsonl files (is --data pointing at shared/data?)")
    return files


def trustworthy_file(data_dir: Path) -> Path:
    """The FULCRA human-checked file."""
    path = data_dir / "fulcra" / "trustworthy_data.jsonl"
    if not path.exists():
        raise DataError(f"{path}: missing (is --data pointing at shared/data?)")
    return path


def load_evaluator(data_dir: Path) -> list[Example]:
    """FULCRA answers with the evaluator's continuous scores (soft targets)."""
    examples = []
    for path in evaluator_files(data_dir):
        for number, row in _lines(path):
            where = f"{path}:{number}"
            try:
                prompt, answer, scores = row["prompt"], row["answer"], row["value_reward"]
            except KeyError as exc:
                raise DataError(f"{where}: missing field {exc.args[0]!r}") from exc
            if not isinstance(scores, list) or len(scores) != len(VALUES):
                raise DataError(f"{where}: value_reward must be a list of {len(VALUES)} numbers")
            target = tuple(max(-1.0, min(1.0, float(s))) for s in scores)
            examples.append(Example(prompt, answer, target, "evaluator", where))
    return examples


def _label(text: str) -> float:
    # Labels are noisy ("1", "1+", "=1", "-1"): the sign is what the annotator meant.
    if "1" not in text:
        return 0.0
    return -1.0 if "-" in text else 1.0


def load_trustworthy(data_dir: Path) -> list[Example]:
    """FULCRA human-checked dialogues with -1/0/+1 labels per value."""
    path = trustworthy_file(data_dir)
    examples = []
    for number, row in _lines(path):
        where = f"{path}:{number}"
        dialogue = row.get("dialogue")
        if not isinstance(dialogue, str) or not dialogue.startswith("Human: "):
            raise DataError(f"{where}: dialogue must look like 'Human: ...\\nBob: ...'")
        cut = dialogue.find("\nBob: ")
        if cut < 0:
            raise DataError(f"{where}: dialogue has no '\\nBob: ' turn")
        prompt, response = dialogue[len("Human: ") : cut], dialogue[cut + len("\nBob: ") :]
        target = dict.fromkeys(VALUES, 0.0)
        for item in row.get("value_types", []):
            name, _, value = str(item).partition(":")
            key = name.strip().lower().replace("-", "_").replace(" ", "_")
            if key in target:  # a few rows name "humility", not one of the ten values
                target[key] = _label(value)
        examples.append(Example(prompt, response, tuple(target.values()), "trustworthy", where))
    return examples


def file_hashes(data_dir: Path) -> dict[str, str]:
    """SHA-256 of every data file training reads, keyed by path relative to ``data_dir``."""
    files = [*evaluator_files(data_dir), trustworthy_file(data_dir)]
    return {str(f.relative_to(data_dir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
