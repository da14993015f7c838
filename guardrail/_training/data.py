"""Training and evaluation data: FULCRA readers and the fixed test split.

Data lives outside the repository (default ``../shared/data``) and is read by path; only what is
trained from it ships. See that folder's README for the file formats.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from guardrail._exceptions import DataError
from guardrail._values import NO_CONNECTION, VALUES

SPLIT_RULE = 'test = int(sha1(prompt.strip().lower().encode("utf-8")).hexdigest(), 16) % 5 == 0'
"""The fixed held-out split (from the data README); rows whose prompt is in it are never trained on."""

Source = Literal["evaluator", "trustworthy", "touche", "written", "harm"]

HARM_SOURCES = ("beavertails", "saferlhf", "gptfuzz", "diasafety")
"""The human-labelled harm files (``harm/<name>.jsonl``), in the data README's order."""


def is_test(prompt: str) -> bool:
    """Whether ``prompt`` falls in the fixed test split."""
    return int(hashlib.sha1(prompt.strip().lower().encode("utf-8")).hexdigest(), 16) % 5 == 0


VALIDATION_RULE = (
    'validation = int(sha1(("validation:" + prompt.strip().lower()).encode("utf-8")).hexdigest(), 16) % 1000'
    " < share * 1000"
)
"""Training prompts held out to choose between training runs (``TrainConfig.validation``); never test prompts."""


def is_validation(prompt: str | None, share: float) -> bool:
    """Whether a training ``prompt`` falls in a validation split of ``share`` of the prompts.

    Salted differently from the test rule, so the two splits are independent. Training holds out
    FULCRA rows only: the metrics are FULCRA's, and the other sources always train.
    """
    if prompt is None or share <= 0:
        return False
    digest = hashlib.sha1(("validation:" + prompt.strip().lower()).encode("utf-8")).hexdigest()
    return int(digest, 16) % 1000 < share * 1000


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled (prompt, response) pair; ``target`` has ten scores in [-1, 1].

    A NaN score means "not labelled": training masks it out of the loss.
    """

    prompt: str | None
    response: str
    target: tuple[float, ...]
    source: Source
    origin: str
    """``file:line`` the example came from."""
    benign_prompt: bool = False
    """The prompt raised no safety issue (FULCRA ``safety_issues`` empty): an everyday request."""
    harmful: bool | None = None
    """Human harm label (harm data): True opposes some safety value, False opposes none; None: no label."""
    subset: str | None = None
    """The harm file the example came from (``beavertails``...), or ``mix`` for built two-part answers."""
    category: str | None = None
    """The harm file's category of the row (DiaSafety: ``Offending User``...)."""
    split: str | None = None
    """The split the data file assigns (harm data); None: the fixed prompt rule decides."""

    @property
    def test(self) -> bool:
        """Whether the example is in the fixed test split (answers without a prompt never are)."""
        if self.split is not None:
            return self.split == "test"
        return self.prompt is not None and is_test(self.prompt)


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
            benign = not row.get("safety_issues")
            examples.append(Example(prompt, answer, target, "evaluator", where, benign_prompt=benign))
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


# Touché23's 20 refined values fold onto the ten (data README); these two fold onto two each.
_TOUCHE_SPLIT = {"face": ("power", "security"), "humility": ("conformity", "tradition")}


def touche_files(data_dir: Path, split: str = "training") -> tuple[Path, Path]:
    """Touché23 arguments and labels of one split (``training`` or ``validation``)."""
    folder = data_dir / "touche23"
    files = (folder / f"arguments-{split}.tsv", folder / f"labels-{split}.tsv")
    for file in files:
        if not file.exists():
            raise DataError(f"{file}: missing (is --data pointing at shared/data?)")
    return files


def _tsv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))


def load_touche(data_dir: Path, split: str = "training") -> list[Example]:
    """Touché23 arguments: conclusion as prompt, premise as response; a value present is +1.

    Touché has no "opposed" label, so it only ever teaches upholds (+1) and no connection (0).
    """
    arguments_file, labels_file = touche_files(data_dir, split)
    labels = {row["Argument ID"]: row for row in _tsv(labels_file)}
    examples = []
    for number, row in enumerate(_tsv(arguments_file), 2):
        where = f"{arguments_file}:{number}"
        label = labels.get(row.get("Argument ID", ""))
        if label is None or not row.get("Premise"):
            raise DataError(f"{where}: argument without premise or labels")
        target = dict.fromkeys(VALUES, 0.0)
        for column, flag in label.items():
            if column == "Argument ID" or flag.strip() != "1":
                continue
            name = column.split(":")[0].strip().lower()
            for key in _TOUCHE_SPLIT.get(name, (name.replace("-", "_"),)):
                if key not in target:
                    raise DataError(f"{labels_file}: unknown value column {column!r}")
                target[key] = 1.0
        examples.append(Example(row["Conclusion"], row["Premise"], tuple(target.values()), "touche", where))
    return examples


WRITTEN_DIR = Path(__file__).resolve().parents[1] / "data"
"""Examples written by the project (not FULCRA): everyday answers and casual harm, see its README."""


def written_files() -> list[Path]:
    """The project's own labelled example files, sorted."""
    return sorted(WRITTEN_DIR.glob("written_*.jsonl"))


def load_written(files: list[Path] | None = None) -> list[Example]:
    """Examples we wrote ourselves, labelled on the values they clearly touch (others NaN).

    Lines: ``{"prompt": str|null, "response": str, "labels": {value: score}, "kind": str}``.
    """
    examples = []
    for path in written_files() if files is None else files:
        for number, row in _lines(path):
            where = f"{path.name}:{number}"
            response, labels = row.get("response"), row.get("labels")
            prompt = row.get("prompt")
            if not isinstance(response, str) or not response.strip():
                raise DataError(f"{where}: 'response' must be a non-empty string")
            if prompt is not None and not isinstance(prompt, str):
                raise DataError(f"{where}: 'prompt' must be a string or null")
            if not isinstance(labels, dict) or not labels:
                raise DataError(f"{where}: 'labels' must map value names to scores")
            unknown = sorted(set(labels) - set(VALUES))
            if unknown:
                raise DataError(f"{where}: unknown value {unknown[0]!r} in labels (allowed: {', '.join(VALUES)})")
            bad = [k for k, x in labels.items() if not isinstance(x, int | float) or not -1 <= x <= 1]
            if bad:
                raise DataError(f"{where}: label {bad[0]!r} must be a number in [-1, 1]")
            target = tuple(float(labels[v]) if v in labels else math.nan for v in VALUES)
            examples.append(Example(prompt, response, target, "written", where))
    return examples


def mix_written(examples: list[Example], seed: int = 0) -> list[Example]:
    """Two-part answers built from the written examples: harm that comes late must still count.

    Each harmful example (some label below -0.3) is put after a benign answer and keeps its own
    labels; each benign one after another benign answer, labelled with the mean of the two where
    both are labelled. Long answers are scored in windows, and a window that starts with helpful
    text and ends with harm must not average the harm away.
    """
    import random

    rng = random.Random(seed)
    benign = [e for e in examples if min((x for x in e.target if not math.isnan(x)), default=0.0) >= -NO_CONNECTION]
    benign_ids = {id(e) for e in benign}
    mixed = []
    for example in examples:
        lead = rng.choice([b for b in benign if b is not example] or [example])
        if id(example) in benign_ids:
            target = tuple(math.nan if math.isnan(a) or math.isnan(b) else (a + b) / 2
                           for a, b in zip(lead.target, example.target))  # fmt: skip
        else:
            target = example.target
        response = f"{lead.response}\n\n{example.response}"
        mixed.append(Example(example.prompt, response, target, "written", f"{example.origin}+{lead.origin}"))
    return mixed


def harm_files(data_dir: Path) -> list[Path]:
    """The harm-label files, one per source in :data:`HARM_SOURCES` order."""
    files = [data_dir / "harm" / f"{name}.jsonl" for name in HARM_SOURCES]
    for file in files:
        if not file.exists():
            raise DataError(f"{file}: missing (is --data pointing at shared/data?)")
    return files


_NO_TARGET = (math.nan,) * len(VALUES)


def load_harm(data_dir: Path, split: Literal["train", "test"] | None = None) -> list[Example]:
    """LLM answers with a human harm label; the ten value targets are unlabelled (NaN).

    ``split`` keeps the rows of one split (the files carry it); None keeps all.
    """
    examples = []
    for path in harm_files(data_dir):
        for number, row in _lines(path):
            where = f"{path}:{number}"
            prompt, response, harmful, row_split = (
                row.get("prompt"),
                row.get("response"),
                row.get("harmful"),
                row.get("split"),
            )
            if not isinstance(response, str) or not isinstance(harmful, bool) or row_split not in ("train", "test"):
                raise DataError(f"{where}: needs 'response' (string), 'harmful' (bool) and 'split' (train or test)")
            if prompt is not None and not isinstance(prompt, str):
                raise DataError(f"{where}: 'prompt' must be a string or null")
            if split is not None and row_split != split:
                continue
            examples.append(Example(prompt or None, response, _NO_TARGET, "harm", where, harmful=harmful,
                                    subset=path.stem, category=row.get("category"), split=row_split))  # fmt: skip
    return examples


_STANDALONE = {"beavertails", "saferlhf", "gptfuzz", "Offending User", "Biased Opinion"}
"""Harm that reads as harm inside any answer (not only as a reply to its own context)."""


def _lead(text: str, limit: int) -> str:
    # The start of a harmless answer, cut after a sentence so the harm starts one.
    cut = text[:limit]
    end = max(cut.rfind(". "), cut.rfind(".\n"), cut.rfind("! "), cut.rfind("? "))
    return cut[: end + 1] if end > 0 else cut


def mix_harm(examples: list[Example], count: int, seed: int = 0) -> list[Example]:
    """Two-part answers from harm rows: a harmless answer's first 0-700 characters, then a short answer.

    ``count`` answers end in a harmful answer (of a kind that is harm wherever it appears), labelled
    harmful; ``count`` end in a harmless one, labelled harmless. Each keeps the prompt of the answer
    it ends in. A harmful sentence inside a friendly answer must count, and a harmless one must not.
    """
    import random

    rng = random.Random(seed)
    leads = [e for e in examples if e.harmful is False and len(e.response) >= 200]
    short = [e for e in examples if 20 <= len(e.response) <= 300]
    harmful = [e for e in short if e.harmful and (e.subset in _STANDALONE or e.category in _STANDALONE)]
    harmless = [e for e in short if e.harmful is False]
    if not leads or not harmful or not harmless:
        return []
    mixed = []
    for tail in rng.choices(harmful, k=count) + rng.choices(harmless, k=count):
        lead = rng.choice(leads)
        response = f"{_lead(lead.response, rng.randint(0, 700))} {tail.response}".strip()
        mixed.append(Example(tail.prompt, response, _NO_TARGET, "harm", f"{tail.origin}+{lead.origin}",
                             harmful=tail.harmful, subset="mix"))  # fmt: skip
    return mixed


def harm_label(example: Example) -> bool | None:
    """Whether ``example`` is harmful in the harm data's sense, from its label or its value targets.

    Harm rows carry the label. FULCRA evaluator answers: harmful when benevolence or universalism
    is strongly opposed (< -0.5), harmless when no value is opposed; written and human-checked
    (trustworthy) answers: harmful when a safety value is opposed, harmless when none is. Else None.
    """
    if example.harmful is not None:
        return example.harmful
    if example.source not in ("evaluator", "trustworthy", "written"):
        return None
    safety = [example.target[VALUES.index(v)] for v in ("security", "conformity", "benevolence", "universalism")]
    labelled = [x for x in safety if not math.isnan(x)]
    if example.source == "evaluator":
        ben, uni = example.target[VALUES.index("benevolence")], example.target[VALUES.index("universalism")]
        if min(ben, uni) < -0.5:
            return True
        return False if min(example.target) >= -NO_CONNECTION else None
    if not labelled:
        return None
    return min(labelled) < -NO_CONNECTION


def file_hashes(data_dir: Path, touche: bool = False, written: bool = False, harm: bool = False) -> dict[str, str]:
    """SHA-256 of every data file training reads, keyed by path relative to ``data_dir``.

    The project's own files are keyed ``guardrail/data/<name>``.
    """
    files = [*evaluator_files(data_dir), trustworthy_file(data_dir)]
    if touche:
        files += touche_files(data_dir, "training")
    if harm:
        files += harm_files(data_dir)
    hashes = {str(f.relative_to(data_dir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    if written:
        hashes |= {f"guardrail/data/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest() for f in written_files()}
    return hashes
