"""Token windows of (prompt, response) pairs, and padded batches of them: the scorer's host path.

:class:`Windower` turns a batch of items into the windows the encoder reads, exactly as the
``transformers`` tokenizer's ``return_overflowing_tokens`` windowing does (``truncation=
"only_second"`` with a stride), at a fraction of its cost: every text of a batch is encoded in
one ``tokenizers`` batch call without offsets, windows are cut from the id lists with slices, and
:func:`pad` builds the padded arrays with numpy in one vectorised copy.

For a BERT-style WordPiece tokenizer (the shipped MiniLM encoder) text is split at whitespace
here and each distinct piece ("word", "word," ...) is tokenised once and cached: such a tokenizer
normalises and splits text at whitespace, punctuation and CJK characters, nothing that crosses
whitespace, so a piece's ids never depend on its neighbours. Text with a control character that
Python splits at but the tokenizer deletes, text naming a special token, and other tokenizers go
through ``encode_batch_fast`` whole. Measured on a 2-core machine for
~60-token answers: ``encode_batch_fast`` alone 12,800 answers/s on both cores; the cache over
100,000/s on one, once warm.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, NamedTuple

import numpy as np

from guardrail._exceptions import ModelLoadError, ScorerError
from guardrail._types import Item
from guardrail._validate import clean_text


class Window(NamedTuple):
    """One window's token ids, specials included, and where its second segment starts.

    Tokens from ``second`` on have type id 1, those before 0 (BERT-style encoders; others take
    no type ids). The attention mask is all ones: padding is added by :func:`pad`.
    """

    ids: list[int]
    second: int


_CHARS_PER_TOKEN = 100
"""Most characters one token covers (a longer word is one unknown token): cuts a prompt before tokenising."""

_CACHE_WORDS = 200_000
"""Distinct pieces a windower remembers; past this the cache starts again (memory stays bounded)."""

_JOINS = re.compile(r"[\x0b\x0c\x1c-\x1f\x85]")
"""Characters Python splits at but a BERT normalizer deletes (control characters): text the cache cannot split."""


@dataclass(frozen=True, slots=True)
class _Template:
    """The special tokens an encoder wraps around one text or a text pair, and where type id 1 starts."""

    single: tuple[list[int], list[int]]
    """Before and after a lone text."""
    pair: tuple[list[int], list[int], list[int]]
    """Before the prompt, between prompt and response, after the response."""
    single_second: int
    """Where type id 1 starts in a lone text's window (its length or more: nowhere)."""
    pair_second: int
    """Where type id 1 starts in a pair's window, counted from the response's first token (<= 0)."""


class Windower:
    """Cuts items into token windows for one tokenizer and windowing setting; safe to share between threads.

    Args:
        tokenizer: A ``transformers`` fast tokenizer (its ``tokenizers`` backend is copied, not changed).
        max_length: Tokens per window, specials included.
        prompt_tokens: Prompt tokens kept at the start of every window.
        window_overlap: Response tokens consecutive windows share (at most half a window).
    """

    def __init__(self, tokenizer: Any, *, max_length: int, prompt_tokens: int, window_overlap: int) -> None:
        from tokenizers import Tokenizer

        self._hf = tokenizer
        self._fast = Tokenizer.from_str(tokenizer.backend_tokenizer.to_str())
        self._fast.no_truncation()  # a tokenizer file may carry its own (MiniLM's: 128 tokens)
        self._fast.no_padding()
        self.max_length = max_length
        self.prompt_tokens = prompt_tokens
        self.stride = min(window_overlap, max_length // 2)
        self._template = self._probe()
        spec = json.loads(self._fast.to_str())
        self._lower = _word_cache_lowercases(spec)
        # An added token ("[SEP]") written in an answer is matched before any splitting: such text goes whole.
        added = [t["content"] for t in spec.get("added_tokens") or []]
        self._added = re.compile("|".join(map(re.escape, added)), re.IGNORECASE) if added else None
        # One search finds both kinds of text the cache cannot split: a joining control character, or a
        # character a special token starts with ("["); most answers have neither and pay one scan.
        marks = "".join(sorted({c for t in added if t for c in (t[0].lower(), t[0].upper())}))
        self._odd = re.compile(f"[{_JOINS.pattern[1:-1]}{re.escape(marks)}]")
        self._words: dict[str, list[int]] = {}
        self.pad_id = int(tokenizer.pad_token_id or 0)
        self.types = "token_type_ids" in tokenizer.model_input_names
        """Whether the encoder takes type ids (``pad`` builds them)."""

    def windows(self, items: Sequence[Item]) -> tuple[list[Window], list[int]]:
        """Token windows of every item, and for each window the index of the item it belongs to.

        Items with and without a prompt are encoded apart (text pair vs single text), so an item's
        windows never depend on which other items share its batch; paired items' windows come first.
        """
        for n, (prompt, response) in enumerate(items):
            if not isinstance(response, str):
                raise ScorerError(f"item {n}: response must be a string, got {type(response).__name__}")
            if prompt is not None and not isinstance(prompt, str):
                raise ScorerError(f"item {n}: prompt must be a string or None, got {type(prompt).__name__}")
        paired = [n for n, (prompt, _) in enumerate(items) if prompt]
        single = [n for n, (prompt, _) in enumerate(items) if not prompt]
        windows: list[Window] = []
        owners: list[int] = []
        if paired:
            prompts = self.clip_prompts([clean_text(items[n][0] or "") for n in paired])
            responses = self.encode([clean_text(items[n][1]) for n in paired])
            for n, prompt_ids, ids in zip(paired, prompts, responses):
                self._cut(ids, prompt_ids, n, windows, owners)
        if single:
            for n, ids in zip(single, self.encode([clean_text(items[n][1]) for n in single])):
                self._cut(ids, None, n, windows, owners)
        return windows, owners

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens."""
        out: list[list[int] | None] = [None] * len(texts)
        whole: list[int] = []
        pending: list[tuple[int, list[str]]] = []
        words = self._words
        for n, text in enumerate(texts):
            odd = self._odd.search(text) if self._lower is not None else True
            if odd is not None and (self._lower is None or _JOINS.search(text) or self._names_a_special(text)):
                whole.append(n)
                continue
            # Python's lower-casing is the tokenizer's on ASCII only: other pieces are cached as written.
            pieces = (text.lower() if self._lower and text.isascii() else text).split()
            ids: list[int] = []
            try:
                for piece in pieces:
                    ids += words[piece]
            except KeyError:  # a piece not seen yet: all of them are tokenised below, in one call
                pending.append((n, pieces))
                continue
            out[n] = ids
        if pending:
            words = self._learn({p for _, pieces in pending for p in pieces})
            for n, pieces in pending:
                ids = []
                for piece in pieces:
                    ids += words[piece]
                out[n] = ids
        if whole:
            encoded = self._fast.encode_batch_fast([texts[n] for n in whole], add_special_tokens=False)
            for n, enc in zip(whole, encoded):
                out[n] = enc.ids
        return out  # type: ignore[return-value]

    def _learn(self, pieces: set[str]) -> dict[str, list[int]]:
        """The cache with ``pieces`` tokenised into it; one too large to keep is returned, not kept."""
        words = self._words
        new = [p for p in pieces if p not in words]
        if len(words) + len(new) > _CACHE_WORDS:
            words, new = {}, list(pieces)  # start again; a batch larger than the cache is not kept
            if len(pieces) <= _CACHE_WORDS:
                self._words = words
        for piece, enc in zip(new, self._fast.encode_batch_fast(new, add_special_tokens=False)):
            words[piece] = enc.ids
        return words

    def _names_a_special(self, text: str) -> bool:
        return self._added is not None and self._added.search(text) is not None

    def clip_prompts(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's ids, at most ``prompt_tokens`` of them, as the scorer's windows carry them.

        A longer prompt is cut to its first ``prompt_tokens`` tokens, decoded and encoded again: what
        the model was trained on. Only a prompt's start is ever tokenised.
        """
        ids = self.encode([p[: self.prompt_tokens * _CHARS_PER_TOKEN] for p in prompts])
        long = [n for n, i in enumerate(ids) if len(i) > self.prompt_tokens]
        if long:
            again = self.encode([self._hf.decode(ids[n][: self.prompt_tokens]) for n in long])
            for n, i in zip(long, again):
                ids[n] = i
        return ids

    def _cut(self, ids: list[int], prompt: list[int] | None, owner: int, windows: list[Window],
             owners: list[int]) -> None:  # fmt: skip
        """Append the windows of one response (``prompt``: its prompt's ids, or None for a lone text)."""
        template = self._template
        if prompt is None:
            head, after = template.single
            second = template.single_second
        else:
            before, middle, after = template.pair
            head = before + prompt + middle
            second = len(head) + template.pair_second
        room = self.max_length - len(head) - len(after)
        if len(ids) <= room:
            windows.append(Window(head + ids + after, second))
            owners.append(owner)
            return
        if room <= self.stride:
            raise ScorerError(
                f"item {owner}: the prompt leaves {room} tokens per window, not more than the "
                f"{self.stride}-token overlap; lower prompt_tokens or window_overlap"
            )
        for start in range(0, len(ids), room - self.stride):
            windows.append(Window(head + ids[start : start + room] + after, second))
            owners.append(owner)
            if start + room >= len(ids):
                break

    def filler(self) -> Window:
        """A window of a lone empty text (specials only): pads a batch to a fixed number of rows."""
        before, after = self._template.single
        return Window(before + after, self._template.single_second)

    def _probe(self) -> _Template:
        """Read where the encoder puts its special tokens, and its type ids, from two probe encodings."""
        fast = self._fast
        a, b = (fast.encode(t, add_special_tokens=False) for t in ("a", "b"))
        if len(a.ids) != 1 or len(b.ids) != 1 or a.ids == b.ids:
            raise ModelLoadError("cannot read the encoder's special tokens: 'a' and 'b' are not single tokens")
        pair = fast.post_process(a, b, add_special_tokens=True)
        one = fast.post_process(a, None, add_special_tokens=True)
        i, j, k = pair.ids.index(a.ids[0]), pair.ids.index(b.ids[0]), one.ids.index(a.ids[0])
        if "token_type_ids" not in self._hf.model_input_names:
            pair_second, single_second = 0, self.max_length
        else:
            pair_second, single_second = _step(pair.type_ids) - j, _step(one.type_ids)
            if pair_second > 0:
                raise ModelLoadError(f"unsupported encoder: type ids {pair.type_ids} do not start at the response")
        return _Template((one.ids[:k], one.ids[k + 1 :]), (pair.ids[:i], pair.ids[i + 1 : j], pair.ids[j + 1 :]),
                         single_second if single_second < len(one.ids) else self.max_length, pair_second)  # fmt: skip


def pad(
    windows: Sequence[Window], pad_id: int, *, types: bool = True, width: int | None = None
) -> dict[str, np.ndarray]:
    """Pad windows into int64 arrays, right-padded: ``input_ids`` (``pad_id``), ``attention_mask``
    and, with ``types``, ``token_type_ids`` (0 on padding), each built in one vectorised step.

    ``width``: pad to this many tokens (a length bucket) rather than to the longest window.
    """
    lengths = np.fromiter((len(w.ids) for w in windows), dtype=np.int64, count=len(windows))
    longest = int(lengths.max()) if len(windows) else 0
    width = longest if width is None else max(width, longest)
    position = np.arange(width)
    filled = position < lengths[:, None]
    ids = np.full((len(windows), width), pad_id, dtype=np.int64)
    ids[filled] = np.fromiter(chain.from_iterable(w.ids for w in windows), dtype=np.int64, count=int(lengths.sum()))
    out = {"input_ids": ids}
    if types:
        second = np.fromiter((w.second for w in windows), dtype=np.int64, count=len(windows))
        out["token_type_ids"] = ((position >= second[:, None]) & filled).astype(np.int64)
    out["attention_mask"] = filled.astype(np.int64)
    return out


def _step(kinds: Sequence[int]) -> int:
    """Where a run of type ids of the form 0...0 1...1 turns to 1 (its length: never)."""
    turn = next((n for n, kind in enumerate(kinds) if kind), len(kinds))
    if any(kind != 0 for kind in kinds[:turn]) or any(kind != 1 for kind in kinds[turn:]):
        raise ModelLoadError(f"unsupported encoder: type ids {list(kinds)} are not 0...0 1...1")
    return turn


def _word_cache_lowercases(spec: dict[str, Any]) -> bool | None:
    """Whether the word cache applies to a tokenizer (its JSON ``spec``: a BERT-style WordPiece pipeline),
    and if so whether it lower-cases.

    ``None``: the tokenizer does more than split ASCII at whitespace and punctuation (another
    normalizer, pre-tokenizer or model), so every text goes through it whole.
    """
    normalizer, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    if normalizer.get("type") != "BertNormalizer" or pre.get("type") != "BertPreTokenizer":
        return None
    if model.get("type") != "WordPiece":
        return None
    if any(not token.get("special") for token in spec.get("added_tokens") or []):
        return None  # a user-added word could span our word boundaries
    return bool(normalizer.get("lowercase"))
