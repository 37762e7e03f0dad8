"""Attention layers whose dropout draws platform-independent masks (:mod:`mssbench.nn.dropout`)."""

from __future__ import annotations

import math

import torch
from torch import nn

from mssbench.nn.dropout import Dropout

__all__ = ["SelfAttention", "TransformerLayer"]


class SelfAttention(nn.Module):
    """Multi-head self-attention with platform-independent dropout on the attention weights.

    Same computation as ``nn.MultiheadAttention(batch_first=True)`` (one input projection to
    queries, keys and values, scaled dot products, an output projection), written out so that
    its dropout draws platform-independent masks.

    Args:
        d_model: Token width; a multiple of ``n_heads``.
        n_heads: Attention heads.
        dropout: Dropout on the attention weights.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be a multiple of n_heads ({n_heads})")
        self.n_heads = n_heads
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        # Initialised as nn.MultiheadAttention initialises its projections.
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        nn.init.zeros_(self.out_proj.bias)
        self.dropout = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N, d]`` in, attended tokens ``[B, N, d]`` out."""
        b, n, d = x.shape
        qkv = self.in_proj(x).view(b, n, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, H, N, d/H]
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.n_heads)  # [B, H, N, N]
        attn = self.dropout(scores.softmax(dim=-1))
        out = (attn @ v).transpose(1, 2).reshape(b, n, d)  # [B, N, d]
        return self.out_proj(out)


class TransformerLayer(nn.Module):
    """Post-norm transformer encoder layer, as ``nn.TransformerEncoderLayer(batch_first=True)``.

    ``h = LN(x + Drop(MHSA(x)))``, ``out = LN(h + Drop(W2 Drop(ReLU(W1 h))))``, every dropout a
    :class:`~mssbench.nn.dropout.Dropout`.

    Args:
        d_model: Token width.
        n_heads: Attention heads.
        d_ff: Hidden width of the feed-forward block.
        dropout: Dropout probability everywhere in the layer.
    """

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.attention = SelfAttention(d_model, n_heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.feed_forward = nn.Sequential(
            nn.Linear(d_model, d_ff), nn.ReLU(), Dropout(dropout), nn.Linear(d_ff, d_model)
        )
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Tokens ``[B, N, d]`` in and out."""
        h = self.norm1(x + self.dropout1(self.attention(x)))
        return self.norm2(h + self.dropout2(self.feed_forward(h)))
