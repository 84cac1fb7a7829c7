"""Keyed generation: order-, thread-, module- and shard-invariance, stream quality, distributed equality."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import torchinit
from torchinit import InitError, _keyed, reinit
from torchinit.testing import assert_distribution, assert_std

sys.path.insert(0, str(Path(__file__).parent))
from dist_models import CHUNK, make


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setitem(_keyed.CHUNK_ELEMENTS, "cpu", CHUNK)
    return CHUNK


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_same_values_whatever_the_thread_count(threads: int, small_chunks: int) -> None:
    reference = make()
    reinit(reference, "kaiming_relu", seed=5, threads=1)
    model = make()
    reinit(model, "kaiming_relu", seed=5, threads=threads)
    assert equal(state(model), state(reference))


def test_same_values_whatever_the_order_and_the_other_modules(small_chunks: int) -> None:
    a = nn.ModuleDict({"x": nn.Linear(100, 200), "y": nn.Conv2d(3, 8, 3), "z": nn.LSTM(8, 8)})
    b = nn.ModuleDict({"z": nn.LSTM(8, 8), "w": nn.Embedding(50, 50), "x": nn.Linear(100, 200)})
    reinit(a, "xavier_uniform", seed=9)
    reinit(b, "xavier_uniform", seed=9)
    for name in ("x.weight", "z.weight_ih_l0", "z.weight_hh_l0"):
        assert torch.equal(a.get_parameter(name), b.get_parameter(name)), name


def test_memory_format_does_not_change_values(small_chunks: int) -> None:
    a, b = nn.Conv2d(16, 32, 5), nn.Conv2d(16, 32, 5).to(memory_format=torch.channels_last)
    reinit(a, seed=1)
    reinit(b, seed=1)
    assert torch.equal(a.weight, b.weight) and b.weight.is_contiguous(memory_format=torch.channels_last)


def test_seed_and_name_select_the_stream(small_chunks: int) -> None:
    a, b, c = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)
    reinit(a, seed=1)
    reinit(b, seed=2)
    reinit(nn.Sequential(c), seed=1)  # its name is now "0.weight": another stream
    assert not torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


@pytest.mark.parametrize(
    "scheme", ["kaiming_relu", "kaiming_relu_uniform", torchinit.Scheme(distribution="truncated_normal")]
)
def test_chunked_output_statistics(scheme: object, small_chunks: int) -> None:
    layer = nn.Linear(1000, 700)  # 700000 elements: 171 chunks of 4096
    report = reinit(layer, scheme, seed=3)  # type: ignore[arg-type]
    std = math.sqrt(2 / 1000)
    shape = report["weight"].distribution
    assert shape in ("normal", "uniform", "truncated_normal")
    flat = layer.weight.detach().reshape(-1)
    assert_std(flat, std, kurtosis=shape)
    assert_distribution(flat, shape, std)
    # across chunk boundaries: the pairs (last of chunk c, first of chunk c+1) are as independent as any
    ends = flat[small_chunks - 1 : -1 : small_chunks]
    starts = flat[small_chunks::small_chunks]
    n = ends.numel()
    correlation = float(torch.corrcoef(torch.stack([ends, starts]))[0, 1])
    assert abs(correlation) <= 4.89 / math.sqrt(n)  # alpha = 1e-6 under independence
    with pytest.raises(AssertionError):
        assert_std(flat, std / math.sqrt(6), kurtosis=shape)


def test_no_two_chunks_share_a_stream(small_chunks: int) -> None:
    model = nn.ModuleDict({f"l{i}": nn.Linear(256, 256) for i in range(4)})
    reinit(model, "kaiming_relu", seed=0)
    other = nn.ModuleDict({f"l{i}": nn.Linear(256, 256) for i in range(4)})
    reinit(other, "kaiming_relu", seed=1)
    chunks = [
        p.detach().reshape(-1)[i : i + 16] for m in (model, other) for p in m.parameters() if p.dim() == 2
        for i in range(0, p.numel(), small_chunks)
    ]  # fmt: skip
    prefixes = {tuple(c.tolist()) for c in chunks}
    assert len(prefixes) == len(chunks) == 2 * 4 * 16


def test_keyed_generator_uses_the_full_state() -> None:
    # torch's manual_seed keeps only 32 bits; keyed streams set all 624 MT words from the key.
    a = torch.empty(8).normal_(generator=_keyed.keyed_generator(b"a", torch.device("cpu")))
    b = torch.empty(8).normal_(generator=_keyed.keyed_generator(b"a", torch.device("cpu")))
    c = torch.empty(8).normal_(generator=_keyed.keyed_generator(b"b", torch.device("cpu")))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # What keyed streams avoid: manual_seed keeps 32 bits, so seeds 1 and 1 + 2**32 give one stream.
    one = torch.empty(4).normal_(generator=torch.Generator().manual_seed(1))
    assert torch.equal(one, torch.empty(4).normal_(generator=torch.Generator().manual_seed(1 + 2**32)))


def test_seed_errors_leave_the_model_unchanged() -> None:
    model = nn.Linear(3, 3)
    before = state(model)
    with pytest.raises(InitError, match="seed must be a non-negative integer; got seed=-1"):
        reinit(model, seed=-1)
    with pytest.raises(InitError, match="seed must be a non-negative integer; got seed=True"):
        reinit(model, seed=True)
    with pytest.raises(InitError, match="pass either seed= .* or generator=, not both"):
        reinit(model, seed=1, generator=torch.Generator())
    with pytest.raises(InitError, match="legacy replays torch's constructors on torch's own RNG stream"):
        reinit(model, "legacy", seed=1)
    assert equal(state(model), before)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("world", [1, 2, 4])
def test_sharded_init_equals_unsharded(world: int, tmp_path: Path, small_chunks: int) -> None:
    """Real torch.distributed (gloo), `world` processes: DTensor Shard(0)/Shard(1)/Replicate and FSDP2."""
    port = str(_free_port())
    worker = Path(__file__).with_name("dist_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen([sys.executable, str(worker), str(r), str(world), port, str(tmp_path)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for r in range(world)
    ]  # fmt: skip
    logs = [p.communicate(timeout=240)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), "\n".join(logs)
    reference = make()
    full = reinit(reference, "kaiming_relu", seed=1234)
    expected = {n: p.detach() for n, p in reference.named_parameters()}
    plain = make()
    torch.manual_seed(7)
    reinit(plain, "kaiming_relu")
    unkeyed = {n: p.detach() for n, p in plain.named_parameters()}
    for rank in range(world):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        for kind in ("dtensor", "fsdp"):
            assert got[kind].keys() == expected.keys()
            for name, value in expected.items():
                assert torch.equal(got[kind][name], value), (kind, name, rank)
        assert got["warned"] == (world > 1)  # a one-rank mesh splits nothing
        for name, value in unkeyed.items():  # torch's RNG, shared state: each rank keeps its block of one draw
            assert torch.equal(got["unkeyed"][name], value), ("unkeyed", name, rank)
        if world == 4:  # a shard draws only the chunks it covers
            assert got["dtensor_drawn"] < full.drawn and got["fsdp_drawn"] < full.drawn
