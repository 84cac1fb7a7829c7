"""The model the distributed test shards, shared by the test and its worker processes."""

from __future__ import annotations

from torch import nn

CHUNK = 4096  # small chunks, so shards of these small tensors draw only part of each
PLACEMENTS = {
    "fc.weight": "shard0",  # (300, 64): 300 rows split unevenly over 4 ranks
    "emb.weight": "shard1",
    "rnn.weight_hh_l0": "shard0",  # orthogonal: not chunkable, drawn whole
    "norm.weight": "replicate",
    "fc.bias": "replicate",
}


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 300)
        self.emb = nn.Embedding(120, 96, padding_idx=7)
        self.rnn = nn.LSTM(16, 32)
        self.norm = nn.LayerNorm(300)
        self.conv = nn.Conv2d(4, 8, 3)


def make() -> nn.Module:
    return Model()
