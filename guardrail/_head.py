"""The value head: pooled encoder features in, ten scores in [-1, 1] out. Imports torch."""

from __future__ import annotations

import torch
from torch import nn


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


def pool(encoder: nn.Module, batch: dict[str, torch.Tensor], layers: list[int]) -> torch.Tensor:
    """Mean-pool the chosen hidden layers over real tokens and concatenate them (float32).

    Shared by scoring and training, so the head always sees the features it was trained on.
    """
    hidden = encoder(**batch, output_hidden_states=True).hidden_states
    # Pooled in float32 whatever the encoder's dtype: a bfloat16 sum over hundreds of tokens
    # would lose the low bits the head reads.
    mask = batch["attention_mask"].unsqueeze(-1).float()
    count = mask.sum(1).clamp(min=1)
    return torch.cat([(hidden[layer].float() * mask).sum(1) / count for layer in layers], dim=-1)
