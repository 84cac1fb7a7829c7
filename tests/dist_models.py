"""The model the distributed test shards, shared by the test and its worker processes."""

from __future__ import annotations

from torch import nn

BLOCK = 4096  # small batches, so these small tensors are cut into blocks as large ones are
BLOCK_WORDS = 1000  # words per pass of a large range: many passes per span
SPAN = 10001  # elements per span job: odd, so spans start on odd elements too (the half-used first word)
PLACEMENTS = {
    "fc.weight": "shard0",  # (301, 64): 301 rows split unevenly (76, 76, 76, 73) over 4 ranks
    "emb.weight": "shard1",  # (120, 98): column blocks of 25, 25, 25, 23
    "rnn.weight_hh_l0": "shard0",  # orthogonal: not chunkable, drawn whole
    "norm.weight": "replicate",
    "fc.bias": "replicate",
}


class Model(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 301)
        self.emb = nn.Embedding(120, 98, padding_idx=7)
        self.rnn = nn.LSTM(16, 32)
        self.norm = nn.LayerNorm(301)
        self.conv = nn.Conv2d(4, 8, 3)


PLACEMENTS_2D = {  # a (2, 2) mesh: both dims sharded, in either order
    "fc.weight": ("shard0", "shard1"),
    "emb.weight": ("shard1", "shard0"),
    "rnn.weight_hh_l0": ("shard0", "replicate"),
    "norm.weight": ("replicate", "shard0"),
}


def make() -> nn.Module:
    return Model()
