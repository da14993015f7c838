"""Tests for span scoring (guardrail._scoring.head): which tokens a span covers, and how spans count."""

from __future__ import annotations

import pytest
import torch

from guardrail._scoring.head import SPAN_MIN_TOKENS, combine_spans, pool, pool_spans, span_masks, token_states


def _batch(types: list[list[int]], attention: list[list[int]]) -> dict[str, torch.Tensor]:
    ids = torch.arange(len(types[0])).repeat(len(types), 1)
    return {"input_ids": ids, "attention_mask": torch.tensor(attention), "token_type_ids": torch.tensor(types)}


def test_spans_cover_the_response_of_a_pair_only() -> None:
    # [CLS] p p [SEP] r r r r r r [SEP] pad: the prompt (type 0) is never in a span.
    batch = _batch([[0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 0]], [[1] * 11 + [0]])
    masks = span_masks(batch, size=4, stride=2)
    assert masks.shape == (1, 6, 12)  # starts 0, 2, 4, 6, 8, 10
    covered = masks[0].sum(0)
    assert covered[:4].sum() == 0 and covered[11] == 0  # prompt, [CLS] and padding
    assert (covered[4:11] > 0).all()
    assert masks[0, 2].tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0]


def test_spans_of_a_lone_text_skip_cls_only() -> None:
    batch = _batch([[0] * 8], [[1] * 6 + [0, 0]])
    covered = span_masks(batch, size=3, stride=3)[0].sum(0)
    assert covered.tolist() == [0, 1, 1, 1, 1, 1, 0, 0]


def test_combine_spans_counts_an_opposing_span_like_a_window() -> None:
    window = torch.tensor([[0.2, -0.1, -0.5, 0.4]])
    spans = torch.tensor([[[0.1, -0.6, -0.4, -0.9], [0.3, -0.2, -0.7, 0.5]]])
    both = torch.tensor([[True, True]])
    # value 0: no span opposes; 1: -0.6 opposes; 2: -0.7 lower than the window's -0.5; 3: -0.9.
    assert combine_spans(window, spans, both)[0].tolist() == pytest.approx([0.2, -0.6, -0.7, -0.9])
    # A span that is not valid (too few tokens) never counts.
    assert combine_spans(window, spans, torch.tensor([[False, True]]))[0].tolist() == pytest.approx(
        [0.2, -0.1, -0.7, 0.4]
    )
    # A low but not opposing span (-0.25) leaves the window's score.
    low = torch.full((1, 1, 4), -0.25)
    assert combine_spans(window, low, torch.tensor([[True]]))[0].tolist() == pytest.approx(window[0].tolist())


class _Encoder(torch.nn.Module):
    """Hidden states that are the token embeddings: pooling is then easy to check by hand."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(64, 3)

    def forward(self, input_ids: torch.Tensor, **_: object) -> object:
        hidden = self.embed(input_ids)
        return type("Out", (), {"hidden_states": (hidden, hidden)})()


def test_pool_spans_pools_the_same_pass() -> None:
    torch.manual_seed(0)
    encoder = _Encoder()
    tokens = 2 + 2 * SPAN_MIN_TOKENS
    batch = _batch([[0] * tokens], [[1] * tokens])
    window, spans, valid = pool_spans(encoder, batch, [-1], SPAN_MIN_TOKENS, SPAN_MIN_TOKENS)
    assert torch.allclose(window, pool(encoder, batch, [-1]))
    states = token_states(encoder, batch, [-1])[0]
    assert torch.allclose(spans[0, 0], states[1:SPAN_MIN_TOKENS].mean(0))  # [CLS] left out
    assert torch.allclose(spans[0, 1], states[SPAN_MIN_TOKENS : 2 * SPAN_MIN_TOKENS].mean(0))
    # Spans with fewer response tokens than SPAN_MIN_TOKENS are not valid: the first lacks [CLS].
    assert valid[0].tolist() == [False, True, False]
