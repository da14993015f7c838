"""Seeing through disguises: an answer as a reader sees it, before the scorer reads it.

A model can be asked to answer in base64, in rot13 or backwards, with zero-width characters or
emoji between the letters, with look-alike Cyrillic letters or l33t digits. A reader still sees
the words; an English encoder sees noise. :func:`normalize` undoes each cheap disguise as one
named step and says which steps it applied. An ordinary answer has nothing to undo: it comes back
unchanged with no steps, so its scores cannot move.

Each step changes only what matches its own pattern: an encoded run is replaced by its decoding
in place, and only when the decoding is mostly printable text; letters are folded only inside
words that are disguised. The steps run in a fixed order: invisible characters first (they split
everything else), then the encodings (which folding letters would break), then the letter folds
on what the encodings revealed.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import unicodedata
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

STEPS = ("invisible", "url", "base64", "hex", "reversed", "rot13", "homoglyphs", "interleaved", "leet")
"""Every step :func:`normalize` may apply, in the order it applies them."""


@dataclass(frozen=True, slots=True)
class Normalized:
    """An answer as a reader sees it, and the steps (names from :data:`STEPS`) that made it so.

    ``decoded`` holds each decoded run on its own (a base64 block, a rot13 paragraph...): the guard
    scores those alone as well, so a friendly lead in front of an encoded answer cannot water it down.
    """

    text: str
    steps: tuple[str, ...] = ()
    decoded: tuple[str, ...] = ()


Reads = Callable[[str], float]
"""How likely a text is in a language the scorer reads (0-1): tells rot13 or reversed text from plain."""


def normalize(text: str, reads: Reads) -> Normalized:
    """Undo the disguises in ``text``; ``steps`` is empty when there was nothing to undo.

    ``reads`` confirms that undoing rot13 or a reversal turned noise into readable text
    (:meth:`guardrail._guard.language.LanguageDetector.reads`).

    >>> from guardrail._guard.language import LanguageDetector
    >>> reads = LanguageDetector().reads
    >>> normalize("h0w t0 m4ke br3ad", reads).text
    'how to make bread'
    >>> normalize("Thanks for the bread recipe!", reads).steps
    ()
    """
    steps: list[str] = []
    decoded: list[str] = []
    for step in _PIPELINE:
        text, applied, runs = step(text, reads)
        steps += applied
        decoded += runs
    if decoded:
        decoded = [_cosmetic(run) for run in decoded]
    return Normalized(text, tuple(steps), tuple(run for run in decoded if run.strip()))


def _cosmetic(text: str) -> str:
    """``text`` through the steps that fold letters (a decoded run may be disguised again)."""
    for fold in _FOLDS:
        text = fold(text)
    return text


# -- invisible characters -----------------------------------------------------------------

_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u202a-\u202e\u2060-\u206f\u3164\ufe00-\ufe0d\ufeff\uffa0\U000e0000-\U000e0fff]"
)
"""Controls, zero-width and joiner characters, bidirectional marks, variation selectors, tags.
U+FE0E/FE0F (text or emoji style after a symbol) are ordinary in emoji and the tokenizer drops them."""


def _strip_invisible(text: str) -> str:
    return _INVISIBLE.sub("", text)


# -- encodings ----------------------------------------------------------------------------


def _readable(raw: bytes) -> str | None:
    """``raw`` as text when it is UTF-8 and mostly words: random bytes almost never are."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if len(text) < 4:
        return None
    printable = sum(c.isprintable() or c in "\n\r\t" for c in text)
    wordy = sum(c.isalpha() or c.isspace() for c in text)
    return text if printable >= 0.95 * len(text) and wordy >= 0.6 * len(text) else None


_URL_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_URL_RUN = re.compile(r"\S*%[0-9A-Fa-f]{2}\S*")


def _decode_url(text: str) -> tuple[str, list[str]]:
    if len(_URL_ESCAPE.findall(text)) < 2:
        return text, []  # a link with one escaped space is not a disguise

    runs: list[str] = []

    def run(match: re.Match[str]) -> str:
        decoded = urllib.parse.unquote(match.group(), errors="strict")
        if not _readable(decoded.encode("utf-8")):
            return match.group()
        runs.append(decoded)
        return decoded

    try:
        return _URL_RUN.sub(run, text), runs
    except UnicodeDecodeError:
        return text, []


# Runs of 16+ base64 characters, possibly wrapped over lines the way encoders wrap them, or
# shorter ones that end in padding.
_BASE64 = re.compile(
    r"(?<![\w+/=-])(?:[A-Za-z0-9+/_-]{16,}(?:\r?\n[A-Za-z0-9+/_-]{4,})*={0,2}|[A-Za-z0-9+/_-]{6,}={1,2})(?![\w+/=-])"
)


def _decode_base64(text: str) -> tuple[str, list[str]]:
    runs: list[str] = []

    def run(match: re.Match[str]) -> str:
        encoded = re.sub(r"\s", "", match.group())
        urlsafe = "-" in encoded or "_" in encoded
        if urlsafe and ("+" in encoded or "/" in encoded):
            return match.group()
        encoded = encoded.rstrip("=")
        encoded += "=" * (-len(encoded) % 4)
        try:
            raw = base64.b64decode(encoded, altchars=b"-_" if urlsafe else None, validate=True)
        except (binascii.Error, ValueError):
            return match.group()
        decoded = _readable(raw)
        if decoded is None:
            return match.group()
        runs.append(decoded)
        return decoded

    return _BASE64.sub(run, text), runs


# 8+ bytes as hex digits: bare, or each byte with \x / 0x and spaces, commas or colons between.
_HEX = re.compile(r"(?<![\w\\])(?:(?:\\x|0x)?[0-9A-Fa-f]{2}[ ,:]?){8,}(?!\w)")


def _decode_hex(text: str) -> tuple[str, list[str]]:
    runs: list[str] = []

    def run(match: re.Match[str]) -> str:
        digits = re.sub(r"\\x|0x|[ ,:]", "", match.group())
        try:
            raw = bytes.fromhex(digits)
        except ValueError:
            return match.group()
        decoded = _readable(raw)
        if decoded is None:
            return match.group()
        runs.append(decoded)
        return decoded + (" " if match.group()[-1] in " ,:" else "")

    return _HEX.sub(run, text), runs


_COMMON_WORDS = frozenset(
    [
        "the",
        "be",
        "to",
        "of",
        "and",
        "a",
        "in",
        "that",
        "have",
        "i",
        "it",
        "for",
        "not",
        "on",
        "with",
        "he",
        "as",
        "you",
        "do",
        "at",
        "this",
        "but",
        "his",
        "by",
        "from",
        "they",
        "we",
        "say",
        "her",
        "she",
        "or",
        "an",
        "will",
        "my",
        "one",
        "all",
        "would",
        "there",
        "their",
        "what",
        "so",
        "up",
        "out",
        "if",
        "about",
        "who",
        "get",
        "which",
        "go",
        "me",
        "when",
        "make",
        "can",
        "like",
        "time",
        "no",
        "just",
        "him",
        "know",
        "take",
        "people",
        "into",
        "year",
        "your",
        "good",
        "some",
        "could",
        "them",
        "see",
        "other",
        "than",
        "then",
        "now",
        "look",
        "only",
        "come",
        "its",
        "over",
        "think",
        "also",
        "back",
        "after",
        "use",
        "two",
        "how",
        "our",
        "work",
        "first",
        "well",
        "way",
        "even",
        "new",
        "want",
        "because",
        "any",
        "these",
        "give",
        "day",
        "most",
        "us",
        "is",
        "are",
        "was",
        "were",
        "has",
        "had",
        "been",
        "should",
        "here",
        "need",
        "must",
        "very",
        "much",
        "more",
        "step",
        "steps",
        "first",
        "then",
    ]
)
"""Frequent English words: a sentence made mostly of none of them is not plain English."""

_WORD = re.compile(r"[a-z]{2,}")  # "a" and "I" read the same reversed: they do not count
_SENTENCE_END = re.compile(r"(?<=[.!?:;])\s+|\n+")


def _english_share(text: str) -> float | None:
    """Share of ``text``'s words that are frequent English words; ``None`` under three words."""
    words = _WORD.findall(text.lower())
    if len(words) < 3:
        return None
    return sum(w in _COMMON_WORDS for w in words) / len(words)


_UNDO: dict[str, Callable[[str], str]] = {
    "reversed": lambda s: s[::-1],
    "rot13": lambda s: codecs.encode(s, "rot13"),
}


def _best_undo(text: str, reads: Reads) -> str | bool | None:
    """The name of the undo (rot13, reversed) under which only ``text`` reads; False: none;
    None: too short to tell.

    Few frequent English words is the cheap first sign (most plain sentences have many); the
    language detector then decides. Both undos are tried and the better reading wins, since the
    detector guesses on noise.
    """
    share = _english_share(text)
    if share is None:
        return None
    if share >= 0.2:
        return False  # plain English has many frequent words: no need to ask the detector
    name, after = max(((name, reads(undo(text))) for name, undo in _UNDO.items()), key=lambda found: found[1])
    return name if after >= 0.6 and after >= reads(text) + 0.3 else False


def _undo_sentences(text: str, reads: Reads) -> tuple[str, list[str], list[str]]:
    """Undo rot13 or reversed text: the whole text, else runs of sentences that read only undone.

    A sentence too short to tell (under three words) goes with the sentence before it (or, at the
    start, after it): "Fher!" inside a rot13 paragraph is rot13 too. Returns the text, the steps
    applied and the undone runs.
    """
    if _english_share(text) is None:
        return text, [], []
    pieces = _SENTENCE_END.split(text)
    seps = [*_SENTENCE_END.findall(text), ""]
    whole = _best_undo(text, reads)
    if whole:
        # A plain lead ("Here it is in rot13:") stays plain; the rest is the disguised answer.
        lead = ""
        for piece, sep in list(zip(pieces, seps))[:3]:
            share = _english_share(piece)
            if share is None or share < 0.2:
                break
            lead += piece + sep
        undone = _UNDO[str(whole)](text[len(lead) :]) if whole == "rot13" else _UNDO[str(whole)](text)
        if whole == "rot13":
            return lead + undone, ["rot13"], [undone]
        return undone, [str(whole)], [undone]
    # The usual shape: a plain lead, then the disguised answer, read whole.
    lead = ""
    for piece, sep in list(zip(pieces, seps))[:3]:
        lead += piece + sep
        rest = text[len(lead) :]
        undo = _best_undo(rest, reads) if rest.strip() else False
        if undo:
            undone = _UNDO[str(undo)](rest)
            return lead + undone, [str(undo)], [undone]
    verdicts = [_best_undo(piece, reads) for piece in pieces]
    if not any(verdicts):
        return text, [], []
    known = [v for v in verdicts if v is not None]
    last: str | bool = known[0] if known else False
    out: list[str] = []
    runs: list[str] = []
    steps: list[str] = []
    current = ""
    for piece, sep, verdict in zip(pieces, seps, verdicts):
        last = last if verdict is None else verdict
        if last:
            piece = _UNDO[str(last)](piece)
            current += piece + sep
            steps += [] if last in steps else [str(last)]
        elif current:
            runs.append(current)
            current = ""
        out.append(piece + sep)
    if current:
        runs.append(current)
    return "".join(out), sorted(steps, key=STEPS.index), runs


# -- letter folds -------------------------------------------------------------------------

_CONFUSABLES = str.maketrans(
    "аеорсухіјѕԁԛԝАВЕКМНОРСТХІЈЅУαορνικυχΑΒΕΖΗΙΚΜΝΟΡΤΥΧıɑɡℓ",
    "aeopcyxijsdqwABEKMHOPCTXIJSYaopvikuxABEZHIKMNOPTYXiagl",
)
"""Cyrillic, Greek and Latin letters that look like plain Latin ones."""

_LOOKALIKE = frozenset(chr(c) for c in _CONFUSABLES)
_WORDS = re.compile(r"\w+")


def _mixed(word: str) -> bool:
    """Whether ``word`` has both plain Latin letters and look-alikes of them."""
    return any(c.isascii() and c.isalpha() for c in word) and any(c in _LOOKALIKE for c in word)


_ENCLOSED = re.compile("[\u24b6-\u24e9\U0001f130-\U0001f149]")
"""Circled and squared Latin letters (Ⓐ, 🄰), which NFKC maps to plain ones."""


def _fold_homoglyphs(text: str) -> str:
    if text.isascii():
        return text
    letters = sum(map(str.isalpha, text))
    latin = sum(c.isascii() and c.isalpha() for c in text)
    # In English text a word of look-alikes is a disguise; in Russian or Greek text it is a word,
    # unless the text also mixes scripts inside words, which no language does.
    disguised = latin * 2 >= letters or any(_mixed(w) for w in _WORDS.findall(text))

    def word(match: re.Match[str]) -> str:
        w = match.group()
        if w.isascii():
            return w
        # NFKC maps fullwidth, mathematical and ligature letters to plain ones.
        w = unicodedata.normalize("NFKC", w)
        if _mixed(w) or (disguised and all(c.isascii() or c in _LOOKALIKE for c in w)):
            w = w.translate(_CONFUSABLES)
        return w

    text = _ENCLOSED.sub(lambda m: unicodedata.normalize("NFKC", m.group()), text)
    return _WORDS.sub(word, text)


_EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\u2300-\u23ff\u3030\u303d\u3297\u3299]")
# Three or more single letters joined by the same separator: k.i.l.l, k-i-l-l, k*i*l*l; or spaced: k i l l.
_SPLIT_WORD = re.compile(r"(?<!\w)[A-Za-z](?P<sep>[-._*·•|~^+/])(?:[A-Za-z](?P=sep))+[A-Za-z](?!\w)")
_SPACED_WORD = re.compile(r"(?<!\w)(?:[A-Za-z] ){3,}[A-Za-z](?!\w)")


def _collapse_interleaved(text: str) -> str:
    if len(_EMOJI.findall(text)) >= 3:
        # Emoji between words leave two spaces, emoji inside a word none.
        text = re.sub(r"(?<=\S) {2,}(?=\S)", " ", _EMOJI.sub("", text))
    text = _SPLIT_WORD.sub(lambda m: re.sub(r"[^A-Za-z]", "", m.group()), text)
    return _SPACED_WORD.sub(_join_spaced, text)


def _join_spaced(match: re.Match[str]) -> str:
    letters = match.group()
    # "a" and "I" are words: a run of only them is a sentence, not a spaced-out word.
    return letters if set(letters) <= set("aAiI ") else letters.replace(" ", "")


_LEET = str.maketrans("0134578@$", "oieastbas")
# A digit or sign between letters (h0w, k1ll, m4k3) marks a disguised word; units (5kg), versions
# (mp3) and years do not. Once two words are disguised, every letter-digit mix is folded (pip3, 4nd).
_LEET_INSIDE = re.compile(r"[A-Za-z][0134578@$]+[A-Za-z]")
_LEET_EDGE = re.compile(r"[A-Za-z][0134578@$]|[0134578@$][A-Za-z]")
_TOKEN = re.compile(r"\S+")
_LEET_ALONE = re.compile(r"[0134578@$]{1,3}[.,;:!?]?")
_HEXLIKE = re.compile(r"[0-9A-Fa-f]{7,}")


def _leet_candidate(token: str) -> bool:
    if "://" in token or re.search(r"\w@\w+\.\w", token) or _HEXLIKE.fullmatch(token.strip(".,;:!?()")):
        return False  # links, e-mail addresses and hashes keep their digits
    return any(c.isalpha() for c in token)


def _fold_leet(text: str) -> str:
    tokens = _TOKEN.findall(text)
    if sum(bool(_LEET_INSIDE.search(t)) and _leet_candidate(t) for t in tokens) < 2:
        return text

    def token(match: re.Match[str]) -> str:
        t = match.group()
        if _LEET_EDGE.search(t) and _leet_candidate(t):
            return t.translate(_LEET)
        # In disguised text a lone 4 or 15 is a word ("a", "is"); longer numbers stay numbers.
        return t.translate(_LEET) if _LEET_ALONE.fullmatch(t) else t

    return _TOKEN.sub(token, text)


def _step(name: str, fold: Callable[[str], str]) -> _Step:
    """A step that changes letters only: named when it changed something, no decoded runs."""

    def step(text: str, reads: Reads) -> tuple[str, list[str], list[str]]:
        folded = fold(text)
        return folded, [name] if folded != text else [], []

    return step


def _decoder(name: str, decode: Callable[[str], tuple[str, list[str]]]) -> _Step:
    """A step that decodes runs in place and hands them on."""

    def step(text: str, reads: Reads) -> tuple[str, list[str], list[str]]:
        decoded, runs = decode(text)
        return decoded, [name] if decoded != text else [], runs

    return step


_Step = Callable[[str, Reads], tuple[str, list[str], list[str]]]
"""One normalisation step: text and ``reads`` in; the text, the steps it applied and decoded runs out."""

_FOLDS: tuple[Callable[[str], str], ...] = (_strip_invisible, _fold_homoglyphs, _collapse_interleaved, _fold_leet)
"""The letter-level steps, which a decoded run goes through again."""

_PIPELINE: tuple[_Step, ...] = (
    _step("invisible", _strip_invisible),
    _decoder("url", _decode_url),
    _decoder("base64", _decode_base64),
    _decoder("hex", _decode_hex),
    _undo_sentences,  # reversed and rot13 together: both are tried on each piece
    _step("homoglyphs", _fold_homoglyphs),
    _step("interleaved", _collapse_interleaved),
    _step("leet", _fold_leet),
)
