"""The value head: pooled encoder features in, ten scores in [-1, 1] out. Imports torch.

Besides the whole window, a model may score *spans*: short runs of response tokens, pooled from
the same forward pass and read by the same head. A span that opposes a value more than its window
does counts like a window would (see :func:`combine_spans`), so one harmful sentence inside a
friendly answer is not averaged away.
"""

from __future__ import annotations

import torch
from torch import nn

from guardrail._values import NO_CONNECTION

SPAN_MIN_TOKENS = 6
"""Fewest response tokens a span must hold to be scored: shorter runs say too little on their own."""


class ValueHead(nn.Module):
    """Standardise features, then a small MLP (or a linear map) and tanh.

    The standardisation statistics are buffers so they travel with the weights.
    """

    def __init__(self, features: int, hidden: int, outputs: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        if hidden:
            self.net: nn.Module = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(features, hidden),
                nn.GELU(),
                nn.Dropout(dropout),
                nn.Linear(hidden, outputs),
            )
        else:
            self.net = nn.Sequential(nn.Dropout(dropout), nn.Linear(features, outputs))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net((features - self.mean) / self.scale))


def token_states(encoder: nn.Module, batch: dict[str, torch.Tensor], layers: list[int]) -> torch.Tensor:
    """The chosen hidden layers per token, concatenated, in float32: (batch, tokens, width)."""
    hidden = encoder(**batch, output_hidden_states=True).hidden_states
    # float32 whatever the encoder's dtype: a bfloat16 sum over hundreds of tokens would lose the
    # low bits the head reads.
    return torch.cat([hidden[layer].float() for layer in layers], dim=-1)


def _mean(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (states * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)


def pool(encoder: nn.Module, batch: dict[str, torch.Tensor], layers: list[int]) -> torch.Tensor:
    """Mean-pool the chosen hidden layers over real tokens and concatenate them (float32).

    Shared by scoring and training, so the head always sees the features it was trained on.
    """
    return _mean(token_states(encoder, batch, layers), batch["attention_mask"].float())


def span_masks(batch: dict[str, torch.Tensor], size: int, stride: int) -> torch.Tensor:
    """Which tokens each span covers: (batch, spans, tokens), 1.0 on covered response tokens.

    Spans are ``size`` tokens long and start every ``stride`` tokens. They cover the response only:
    in a text pair the tokens of the second segment (``token_type_ids`` 1), in a lone text every
    token but ``[CLS]``. The prompt is never a span: a harmful question is not a harmful answer.
    """
    attention = batch["attention_mask"].float()
    tokens = attention.shape[1]
    position = torch.arange(tokens, device=attention.device)
    response = attention * (position > 0).float()
    types = batch.get("token_type_ids")
    if types is not None:
        paired = (types.sum(1, keepdim=True) > 0).float()
        response = response * (paired * types.float() + (1 - paired))
    starts = torch.arange(0, tokens, stride, device=attention.device)
    covers = (position.unsqueeze(0) >= starts.unsqueeze(1)) & (position.unsqueeze(0) < starts.unsqueeze(1) + size)
    return covers.float().unsqueeze(0) * response.unsqueeze(1)


def pool_spans(
    encoder: nn.Module, batch: dict[str, torch.Tensor], layers: list[int], size: int, stride: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward pass pooled twice: the window (as :func:`pool`) and every span of it.

    Returns ``(window, spans, valid)``: (batch, width), (batch, spans, width) and (batch, spans),
    where ``valid`` marks spans with at least :data:`SPAN_MIN_TOKENS` response tokens.
    """
    states = token_states(encoder, batch, layers)
    window = _mean(states, batch["attention_mask"].float())
    masks = span_masks(batch, size, stride)
    counts = masks.sum(-1)
    spans = torch.einsum("bkt,btd->bkd", masks, states) / counts.clamp(min=1).unsqueeze(-1)
    return window, spans, counts >= SPAN_MIN_TOKENS


def lowest_span(spans: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per value, the lowest score over the valid spans: (batch, values); 1.0 where no span is valid."""
    return torch.where(valid.unsqueeze(-1), spans, torch.ones_like(spans)).min(dim=1).values


def combine_spans(window: torch.Tensor, spans: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """A window's scores with its spans counted: per value, the most opposing valid span when it
    opposes the value (below -0.3) and more than the window does; else the window's own score.

    ``window`` (batch, values), ``spans`` (batch, spans, values), ``valid`` (batch, spans).
    """
    lowest = lowest_span(spans, valid)
    return torch.where((lowest < window) & (lowest < -NO_CONNECTION), lowest, window)


def score_batch(
    encoder: nn.Module,
    head: nn.Module,
    batch: dict[str, torch.Tensor],
    layers: list[int],
    span_tokens: int,
    span_stride: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores and window features of one padded batch: what serving and export compute.

    With ``span_tokens`` 0 the window alone is scored.
    """
    if not span_tokens:
        features = pool(encoder, batch, layers)
        return head(features), features
    window, spans, valid = pool_spans(encoder, batch, layers, span_tokens, span_stride)
    return combine_spans(head(window), head(spans), valid), window
