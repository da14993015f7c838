"""Checks at the scorer's boundary: the text that goes in, the metadata beside it, the vectors that come out.

Whatever a caller or a scorer hands over is checked here once, so a bad value fails with a line
naming it instead of a traceback from deep inside a tokenizer, the policy engine or an exporter.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from itertools import chain
from typing import Any

import numpy as np

from guardrail._exceptions import ScorerError
from guardrail._values import VALUES, ValueVector

_SURROGATE = re.compile("[\ud800-\udfff]")
REPLACEMENT = "\ufffd"
"""What a lone surrogate becomes before scoring (U+FFFD, the Unicode replacement character)."""


def clean_text(text: str) -> str:
    """``text`` with every lone surrogate (``"\\ud800"``...) replaced by U+FFFD.

    A Python string may hold surrogate code points that no UTF-8 encoder accepts: tokenizers and
    span exporters fail on them. They carry no words, so scoring and spans see the replacement
    character instead; the caller's own text is delivered as it is.

    >>> clean_text("caf\\udce9 ok")
    'caf\\ufffd ok'
    """
    if text.isascii() or _SURROGATE.search(text) is None:
        return text
    return _SURROGATE.sub(REPLACEMENT, text)


def check_metadata(metadata: object) -> None:
    """Raise ``TypeError`` naming ``metadata`` unless it is ``None`` or a mapping with string keys."""
    if metadata is None:
        return
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a mapping (a dict) or None, got {type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be strings, got {type(key).__name__} {key!r}")


def _in_range(value: object) -> bool:
    return isinstance(value, float) and -1.0 <= value <= 1.0  # NaN fails the comparison; an int or bool is no float


def checked_vectors(vectors: Any, count: int) -> list[ValueVector]:
    """A scorer's output for ``count`` items, checked: a list of ``count`` finite in-range vectors.

    Raises:
        ScorerError: for anything else (a dict, a generator, the wrong count, another type,
            NaN or infinity), so a broken scorer is a scoring failure the policy's ``on_error`` decides.
    """
    if not isinstance(vectors, (list, tuple)):
        raise ScorerError(f"the scorer returned {type(vectors).__name__}, expected a list of {count} ValueVector")
    if len(vectors) != count:
        raise ScorerError(f"{len(vectors)} vectors for {count} items")
    for n, vector in enumerate(vectors):
        if not isinstance(vector, ValueVector):
            raise ScorerError(f"the scorer returned {type(vector).__name__} for item {n}, expected a ValueVector")
    # A ValueVector checks its scores when built, but object.__setattr__ gets around that: all at once.
    rows = [v.to_list() for v in vectors]
    try:
        scores = np.asarray(rows, dtype=np.float64)
        fine = bool(np.isfinite(scores).all() and (np.abs(scores) <= 1.0).all())
    except (TypeError, ValueError):
        fine = False
    if not fine or not set(map(type, chain.from_iterable(rows))) <= {float}:
        for n, row in enumerate(rows):
            for name, value in zip(VALUES, row):
                if not _in_range(value):
                    raise ScorerError(
                        f"the scorer returned {name}={value!r} for item {n}, expected a number in [-1, 1]"
                    )
    return list(vectors)
