"""The models of tests/test_mup.py: mup's MLP example, and a small pre-LN Transformer LM of torch.nn layers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BASE = 64
"""The base width of every muP comparison and coordinate check."""


class MLP(nn.Module):
    """mup's MLP example (examples/MLP/main.py) with biases; ``head`` is ``MuReadout`` for the package."""

    def __init__(self, width: int, head: type[nn.Linear] = nn.Linear, d_in: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.fc_1 = nn.Linear(d_in, width)
        self.fc_2 = nn.Linear(width, width)
        self.act = nn.ReLU()
        self.head = head(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.fc_2(F.relu(self.fc_1(x)))))


class Attention(nn.Module):
    """Causal self-attention, logits scaled by ``scaling`` (muP: sqrt(base_head_dim) / head_dim)."""

    def __init__(self, width: int, heads: int, scaling: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.scaling = heads, width // heads, scaling
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))  # type: ignore[no-any-return]


class Block(nn.Module):
    def __init__(self, width: int, heads: int, scaling: float) -> None:
        super().__init__()
        self.ln_1, self.attn = nn.LayerNorm(width), Attention(width, heads, scaling)
        self.ln_2, self.fc, self.out = nn.LayerNorm(width), nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.out(F.gelu(self.fc(self.ln_2(x))))  # type: ignore[no-any-return]


class LM(nn.Module):
    """A pre-LN Transformer LM of torch.nn layers: 2 blocks, 4 heads (head_dim grows with width), untied head."""

    def __init__(self, width: int, mu: bool = True, vocab: int = 64, context: int = 16) -> None:
        super().__init__()
        head_dim = width // 4
        scaling = (BASE // 4) ** 0.5 / head_dim if mu else head_dim**-0.5
        self.embed, self.pos = nn.Embedding(vocab, width), nn.Embedding(context, width)
        self.blocks = nn.ModuleList(Block(width, 4, scaling) for _ in range(2))
        self.ln_f, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))  # type: ignore[no-any-return]
