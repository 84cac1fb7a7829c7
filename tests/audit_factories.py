"""Model factories for the audit's tests: ``torchinit audit tests/audit_factories.py:tiny_gpt2 ...``."""

from __future__ import annotations

import math

import torch
from torch import nn


def tiny_gpt2() -> nn.Module:
    """A Hugging Face GPT2LMHeadModel (tied head), 2 layers of 32: takes token ids, not floats."""
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config(
        n_layer=2, n_embd=32, n_head=4, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(config)


def gpt2_small() -> nn.Module:
    """GPT-2 small (124 M parameters), for the docs' figure."""
    import transformers

    transformers.logging.set_verbosity_error()
    return transformers.GPT2LMHeadModel(transformers.GPT2Config())


class KeywordOnly(nn.Module):
    """A model called as model(input_ids=..., attention_mask=...)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 16)
        self.fc = nn.Linear(16, 4)

    def forward(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(input_ids) * attention_mask[..., None]
        return self.fc(h.mean(1))


def keyword_only() -> nn.Module:
    return KeywordOnly()


class Scaled(nn.Module):
    """A custom module with a raw nn.Parameter no rule covers."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 64)
        self.gain = nn.Parameter(torch.ones(64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) * self.gain


def mixed_scales() -> nn.Module:
    """Dense layers at 0.22x, 0.5x, 1x and 2x kaiming_relu's std, a torch-default Linear, a raw parameter,
    and one ReLU module called after every layer."""

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(4))
            self.default = nn.Linear(64, 64)  # left at torch's default init
            self.scaled = Scaled()
            self.act = nn.ReLU()  # one module, called five times

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for layer in [*self.layers, self.default]:
                x = self.act(layer(x))
            return self.scaled(x)

    net = Net()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for layer, ratio in zip(net.layers, (0.22, 0.5, 1.0, 2.0), strict=True):
            layer.weight.normal_(0, ratio * math.sqrt(2 / 64), generator=g)
        net.scaled.fc.weight.normal_(0, math.sqrt(1 / 64), generator=g)  # the readout (last, named fc): gain 1
    return net


def token_mlp() -> nn.Module:
    """Token ids in, positional: an Embedding of 10 rows, then a Linear."""
    return nn.Sequential(nn.Embedding(10, 16), nn.Linear(16, 4))


def unseeded() -> nn.Module:
    """Its init draws from torch's global RNG: the audit's --seed makes it repeat."""
    return nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 8))


def inf_weight() -> nn.Module:
    """A first layer with one infinite weight: its std, the pass's activations and their stds are not finite."""
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[0].weight[0, 0] = math.inf
    return model
