"""Write each case's ``recorded`` block back into its test file, leaving the rest as written.

The file is edited as text, not dumped again: PyYAML's composer gives every node's start and end,
so an old ``recorded`` block is cut out and the new one put in its place (or after the case's
last line), and every comment, blank line, quoting style and key order of the author survives.
A round-trip YAML library would do the same at the cost of a dependency, and would still reflow
some of what it keeps. The new text is parsed again and compared with what was meant before the
file is replaced (atomically).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from guardrail._exceptions import Issue, PolicyTestError
from guardrail._lifecycle.cases import Case, PolicyTests, Recorded, RecordedLanguage
from guardrail._lifecycle.coverage import LANGUAGE_RULE
from guardrail._values import VALUES
from guardrail._verdict import Verdict

DIGITS = 4
"""Decimals a recorded score keeps, as in every other JSON output of the guard."""


def recording(case: Case, verdict: Verdict, digits: int | None = DIGITS) -> Recorded:
    """What to record of ``verdict`` on ``case``: its scores (rounded to ``digits``; ``None``: as they are),
    the language rule's share when it fired, and the digest of what was scored."""

    def rounded(value: float) -> float:
        return value if digits is None else round(value, digits)

    scores = None if verdict.scores is None else {k: rounded(v) for k, v in verdict.scores.to_dict().items()}
    share = next((v.observed for v in verdict.violations if v.rule == LANGUAGE_RULE), None)
    # Never rounded to 0: the rule fired, and must fire again when replayed.
    language = None if share is None else RecordedLanguage(share=max(rounded(share), 10.0 ** -(digits or 12)))
    return Recorded(scores=scores, language=language, digest=case.digest)


def recorded_dict(recorded: Recorded) -> dict[str, Any]:
    """The block as YAML data, in the order it is written."""
    out: dict[str, Any] = {"scores": None if recorded.scores is None else {k: recorded.scores[k] for k in VALUES}}
    if recorded.language is not None:
        out["language"] = {"share": recorded.language.share}
    if recorded.digest is not None:
        out["digest"] = recorded.digest
    return out


def write_recordings(tests: PolicyTests, recordings: Mapping[int, Recorded]) -> None:
    """Put ``recordings`` (by case index) into the file of ``tests``, replacing any older ones.

    Raises:
        PolicyTestError: A case is written in flow style (``- {name: ...}``), which has no place for a
            block, or the edited file would not read back as meant (nothing is written then).
    """
    text = tests.path.read_text(encoding="utf-8")
    newline = "\r\n" if "\r\n" in text else "\n"
    root = yaml.compose(text, Loader=yaml.SafeLoader)  # the file was read safely (and bounded) before
    cases = _value(root, "cases")
    assert isinstance(cases, yaml.SequenceNode)
    edits: list[tuple[int, int, str]] = []
    for index in sorted(recordings):
        case = cases.value[index]
        if not isinstance(case, yaml.MappingNode) or case.flow_style:
            line = case.start_mark.line + 1
            message = "a flow-style case ({...}) cannot take a recorded block; write the case in block style"
            raise PolicyTestError([Issue(tests.file, line, case.start_mark.column + 1, f"cases.{index}", message)])
        block = _render(recordings[index], case.start_mark.column, newline)
        old = next(((k, v) for k, v in case.value if isinstance(k, yaml.ScalarNode) and k.value == "recorded"), None)
        if old is not None:
            start = _line_start(text, old[0].start_mark.index)
            edits.append((start, _line_end(text, _end(text, old[1])), block))
        else:
            at = _line_end(text, _end(text, case.value[-1][1]))
            if at == len(text) and not text.endswith("\n"):
                block = newline + block.removesuffix(newline)
            edits.append((at, at, block))
    edited = text
    for start, end, block in reversed(edits):  # from the end, so earlier offsets stay valid
        edited = edited[:start] + block + edited[end:]
    _check(tests, text, edited, recordings)
    _replace(tests.path, edited)


def _value(mapping: yaml.Node, key: str) -> yaml.Node | None:
    if isinstance(mapping, yaml.MappingNode):
        for k, v in mapping.value:
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


def _end(text: str, node: yaml.Node) -> int:
    """Where the text of ``node`` ends: its last scalar or flow collection, trailing line breaks left out.

    A block collection ends where the next token starts, past any comments that follow it, which
    belong to what comes next.
    """
    while isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    end = node.end_mark.index
    while end > node.start_mark.index and text[end - 1] in " \t\r\n":
        end -= 1
    return end


def _line_start(text: str, index: int) -> int:
    return text.rfind("\n", 0, index) + 1


def _line_end(text: str, index: int) -> int:
    """Just past the line break of the line holding ``index`` (the end of the text on the last line)."""
    at = text.find("\n", index)
    return len(text) if at < 0 else at + 1


def _render(recorded: Recorded, column: int, newline: str) -> str:
    pad = " " * column
    lines = [f"{pad}recorded:"]
    if recorded.scores is None:
        lines.append(f"{pad}  scores: null")
    else:
        items = [f"{k}: {_number(recorded.scores[k])}" for k in VALUES]
        # Two lines of five: a flow mapping may go on over lines indented past its key.
        head = f"{pad}  scores: {{"
        lines.append(head + ", ".join(items[:5]) + ",")
        lines.append(" " * len(head) + ", ".join(items[5:]) + "}")
    if recorded.language is not None:
        lines.append(f"{pad}  language: {{share: {_number(recorded.language.share)}}}")
    if recorded.digest is not None:
        lines.append(f"{pad}  digest: '{recorded.digest}'")  # quoted: 12 digits alone would read as a number
    return newline.join(lines) + newline


def _number(value: float) -> str:
    text = repr(float(value))
    return "0.0" if text == "-0.0" else text


def _check(tests: PolicyTests, before: str, after: str, recordings: Mapping[int, Recorded]) -> None:
    """Refuse an edit that does not read back as the same file with the new recordings."""
    try:
        old, new = yaml.safe_load(before), yaml.safe_load(after)
        bad = [n for n, r in recordings.items() if new["cases"][n].get("recorded") != recorded_dict(r)]
        same = [{k: v for k, v in case.items() if k != "recorded" or n not in recordings}
                for n, case in enumerate(new["cases"])]  # fmt: skip
        kept = [{k: v for k, v in case.items() if k != "recorded" or n not in recordings}
                for n, case in enumerate(old["cases"])]  # fmt: skip
        rest = {k: v for k, v in new.items() if k != "cases"} == {k: v for k, v in old.items() if k != "cases"}
    except (yaml.YAMLError, KeyError, IndexError, TypeError, AttributeError) as exc:
        reason = str(exc)
    else:
        if not bad and same == kept and rest:
            return
        reason = "it would not read back as the same file with the new recordings"
    message = f"cannot write the recordings into this file ({reason}); nothing was written"
    raise PolicyTestError([Issue(tests.file, None, None, "", message)])


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, keeping its permissions."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
        os.chmod(temp, path.stat().st_mode & 0o7777)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
