"""Model shapes shared by the benchmarks: GPT-2 small (untied: 163.0 M parameters, 149 tensors) and Llama-7B."""

from __future__ import annotations

import torch
from torch import nn


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.ModuleDict({"c_attn": nn.Linear(width, 3 * width), "c_proj": nn.Linear(width, width)})
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(width, 4 * width), "c_proj": nn.Linear(4 * width, width)})


class GPT2Small(nn.Module):
    """GPT-2 small's parameter tree (163.0 M parameters, 149 tensors untied). The causal mask is a buffer made in
    __init__.

    ``tied=False`` (the default for every benchmark): ``lm_head`` has its own weight, so torch's reset loop and
    torchinit draw each of the same 149 tensors once and compare equal work. ``tied=True`` is the real GPT-2
    (124.4 M parameters, 148 tensors): there torch's reset loop draws the 38.6 M-element wte table twice
    (Embedding.reset_parameters, then Linear's through lm_head: 163.0 M draws) while torchinit draws it once
    (124.4 M), which is how the 0.2 benchmarks overstated the keyed speed-up.
    """

    def __init__(
        self, vocab: int = 50257, context: int = 1024, width: int = 768, layers: int = 12, *, tied: bool = False
    ) -> None:
        super().__init__()
        self.wte = nn.Embedding(vocab, width)
        self.wpe = nn.Embedding(context, width)
        self.h = nn.ModuleList([Block(width) for _ in range(layers)])
        self.ln_f = nn.LayerNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
        if tied:
            self.lm_head.weight = self.wte.weight
        self.register_buffer("mask", torch.tril(torch.ones(context, context, dtype=torch.bool)))


def parameter_count(model: nn.Module) -> tuple[int, int]:
    """(elements, tensors), counting tied tensors once."""
    params = list(model.parameters())
    return sum(p.numel() for p in params), len(params)


class LlamaBlock(nn.Module):
    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.input_layernorm = nn.RMSNorm(width)
        self.self_attn = nn.ModuleDict(
            {n: nn.Linear(width, width, bias=False) for n in ("q_proj", "k_proj", "v_proj", "o_proj")}
        )
        self.post_attention_layernorm = nn.RMSNorm(width)
        self.mlp = nn.ModuleDict(
            {"gate_proj": nn.Linear(width, hidden, bias=False), "up_proj": nn.Linear(width, hidden, bias=False),
             "down_proj": nn.Linear(hidden, width, bias=False)}
        )  # fmt: skip


class Llama(nn.Module):
    """Llama-7B's parameter tree at scale=1 (6.74 B parameters); ``scale`` shrinks widths for dry runs."""

    def __init__(self, scale: float = 1.0, layers: int = 32) -> None:
        super().__init__()
        width, hidden, vocab = int(4096 * scale), int(11008 * scale), int(32000 * scale)
        self.embed_tokens = nn.Embedding(vocab, width)
        self.layers = nn.ModuleList([LlamaBlock(width, hidden) for _ in range(layers)])
        self.norm = nn.RMSNorm(width)
        self.lm_head = nn.Linear(width, vocab, bias=False)
