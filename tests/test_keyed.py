"""Keyed generation: order-, thread-, module- and shard-invariance, stream quality, distributed equality."""

from __future__ import annotations

import contextlib
import math
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.utils._pytree as pytree
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import torchinit
from torchinit import InitError, reinit
from torchinit._maths import keyed as _keyed
from torchinit._maths import keyed_jobs as _keyed_jobs
from torchinit._maths import stream as _stream
from torchinit._maths import workspace as _workspace
from torchinit.extend import Action
from torchinit.testing import assert_distribution, assert_std

sys.path.insert(0, str(Path(__file__).parent))
from dist_models import BLOCK, BLOCK_WORDS, SPAN, make
from toys import any_model


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    """Batches of 4096 elements, spans of 10001 and passes of 1000 words, so these small tensors are cut
    into many blocks, spans and passes, and batched together."""
    monkeypatch.setattr(_keyed, "BLOCK", BLOCK)
    monkeypatch.setattr(_keyed, "SPAN", SPAN)
    monkeypatch.setattr(_stream, "BLOCK_WORDS", BLOCK_WORDS)
    return BLOCK


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_same_values_whatever_the_thread_count(threads: int, small_blocks: int) -> None:
    reference = make()
    reinit(reference, "kaiming_relu", seed=5, threads=1)
    model = make()
    reinit(model, "kaiming_relu", seed=5, threads=threads)
    assert equal(state(model), state(reference))


def test_same_values_whatever_the_order_and_the_other_modules(small_blocks: int) -> None:
    a = nn.ModuleDict({"x": nn.Linear(100, 200), "y": nn.Conv2d(3, 8, 3), "z": nn.LSTM(8, 8)})
    b = nn.ModuleDict({"z": nn.LSTM(8, 8), "w": nn.Embedding(50, 50), "x": nn.Linear(100, 200)})
    reinit(a, "xavier_uniform", seed=9)
    reinit(b, "xavier_uniform", seed=9)
    for name in ("x.weight", "z.weight_ih_l0", "z.weight_hh_l0"):
        assert torch.equal(a.get_parameter(name), b.get_parameter(name)), name


def test_memory_format_does_not_change_values(small_blocks: int) -> None:
    a, b = nn.Conv2d(16, 32, 5), nn.Conv2d(16, 32, 5).to(memory_format=torch.channels_last)
    reinit(a, seed=1)
    reinit(b, seed=1)
    assert torch.equal(a.weight, b.weight) and b.weight.is_contiguous(memory_format=torch.channels_last)


def test_seed_and_name_select_the_stream(small_blocks: int) -> None:
    a, b, c = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 64)
    reinit(a, seed=1)
    reinit(b, seed=2)
    reinit(nn.Sequential(c), seed=1)  # its name is now "0.weight": another stream
    assert not torch.equal(a.weight, b.weight) and not torch.equal(a.weight, c.weight)


@pytest.mark.parametrize(
    "scheme", ["kaiming_relu", "kaiming_relu_uniform", torchinit.Scheme(distribution="truncated_normal")]
)
def test_blocked_output_statistics(scheme: object, small_blocks: int) -> None:
    layer = nn.Linear(1000, 700)  # 700000 elements: 171 blocks of 4096
    report = reinit(layer, scheme, seed=3)  # type: ignore[arg-type]
    std = math.sqrt(2 / 1000)
    shape = report["weight"].distribution
    assert shape in ("normal", "uniform", "truncated_normal")
    flat = layer.weight.detach().reshape(-1)
    assert_std(flat, std, kurtosis=shape)
    assert_distribution(flat, shape, std)
    # across block boundaries: the pairs (last of block c, first of block c+1) are as independent as any
    ends = flat[small_blocks - 1 : -1 : small_blocks]
    starts = flat[small_blocks::small_blocks]
    n = ends.numel()
    correlation = float(torch.corrcoef(torch.stack([ends, starts]))[0, 1])
    assert abs(correlation) <= 4.89 / math.sqrt(n)  # alpha = 1e-6 under independence
    with pytest.raises(AssertionError):
        assert_std(flat, std / math.sqrt(6), kurtosis=shape)


def test_no_two_parameters_share_values(small_blocks: int) -> None:
    model = nn.ModuleDict({f"l{i}": nn.Linear(256, 256) for i in range(4)})
    reinit(model, "kaiming_relu", seed=0)
    other = nn.ModuleDict({f"l{i}": nn.Linear(256, 256) for i in range(4)})
    reinit(other, "kaiming_relu", seed=1)
    pieces = [
        p.detach().reshape(-1)[i : i + 16] for m in (model, other) for p in m.parameters() if p.dim() == 2
        for i in range(0, p.numel(), small_blocks)
    ]  # fmt: skip
    prefixes = {tuple(c.tolist()) for c in pieces}
    assert len(prefixes) == len(pieces) == 2 * 4 * 16


def test_values_do_not_depend_on_blocks_batches_or_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    # A parameter's values are the same drawn alone, batched with hundreds of small tensors, cut into
    # blocks of 4096 or the default BLOCK, through keyed_, and (rounded once) in bfloat16.
    def model() -> nn.Module:
        return nn.ModuleDict({"big": nn.Linear(300, 257), **{f"s{i}": nn.Linear(7, 5) for i in range(300)}})

    whole = model()
    reinit(whole, "kaiming_relu", seed=4)
    monkeypatch.setattr(_keyed, "BLOCK", 4096)
    blocked = model()
    reinit(blocked, "kaiming_relu", seed=4)
    assert equal(state(whole), state(blocked))
    alone = nn.ModuleDict({"big": nn.Linear(300, 257)})
    reinit(alone, "kaiming_relu", seed=4)
    assert torch.equal(alone["big"].weight, whole["big"].weight)  # type: ignore[index]
    direct = torchinit.keyed_(torch.empty(257, 300), "normal", math.sqrt(2 / 300), seed=4, name="big.weight")
    assert torch.equal(direct, whole["big"].weight)  # type: ignore[index]
    half = model().to(torch.bfloat16)
    reinit(half, "kaiming_relu", seed=4)
    assert torch.equal(half["big"].weight, whole["big"].weight.to(torch.bfloat16))  # type: ignore[index]


@pytest.mark.parametrize("kind", ["normal", "uniform", "truncated_normal"])
def test_compiled_chains_equal_eager_across_passes_and_spans(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # The kernel chains run as TorchScript functions on CPU (one call per span, no GIL between kernels);
    # eager runs the same ops. Both must give the Python reference's words and bit-identical values, for
    # a range starting and ending on odd elements, cut into passes of 7 words and spans of 101 elements,
    # into float32, bfloat16 and float64 destinations.
    assert isinstance(_stream.kernel(_stream._range_into, torch.empty(0)), torch.jit.ScriptFunction)
    start, gamma = _stream.stream_key(3, "x.weight")
    lo, hi = 5, 5 + 2001

    def fill(scripted: bool, words: int, dtype: torch.dtype) -> torch.Tensor:
        monkeypatch.setattr(_stream, "SCRIPTED", scripted)
        monkeypatch.setattr(_stream, "BLOCK_WORDS", words)
        dest = torch.empty(hi - lo, dtype=dtype)
        for a in range(lo, hi, 101):
            b = min(a + 101, hi)
            _stream.range_values(kind, 2.0, start, gamma, a, b, dest[a - lo : b - lo], 0.5, _workspace.Workspace())
        return dest

    reference = fill(False, 1 << 16, torch.float32)
    whole = torch.empty(hi)
    _stream.range_values(kind, 2.0, start, gamma, 0, hi, whole, 0.5, _workspace.Workspace())
    assert torch.equal(reference.view(torch.int32), whole[lo:].view(torch.int32))
    for scripted in (False, True):
        assert torch.equal(fill(scripted, 7, torch.float32).view(torch.int32), reference.view(torch.int32))
        assert torch.equal(fill(scripted, 7, torch.bfloat16), reference.to(torch.bfloat16))
        assert torch.equal(fill(scripted, 7, torch.float64), reference.double())
    words = _stream.range_words(start, gamma, lo, hi, torch.device("cpu"))
    expected = [_stream.word(start, gamma, i >> 1) >> (32 * (i & 1)) & 0xFFFFFFFF for i in (lo, lo + 1, hi - 1)]
    assert [w & 0xFFFFFFFF for w in words[[0, 1, -1]].tolist()] == expected
    if kind == "normal":  # the values are the words' mapping, times the scale
        assert torch.equal(reference, _stream.unit_normal(words).mul_(0.5))


def test_small_tensors_stacked_by_shape_equal_each_tensor_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # Small whole tensors of one shape are computed as the rows of one matrix; each must get exactly the
    # values of its own stream computed alone in one flat range (STACKED = 0 turns the stacking off),
    # with per-row scales, a row zeroed, several distributions and a bfloat16 tensor among them.
    specs = [
        ((6, 4), "normal", 0.5),
        ((6, 4), "normal", 0.25),
        ((6, 4), "normal", 0.5),
        ((2, 3, 4), "uniform", 0.3),
        ((2, 3, 4), "uniform", 0.3),
        ((8,), "truncated_normal", 0.02),
        ((8,), "truncated_normal", 0.04),
        ((5, 3), "normal", 1.0),  # odd: the flat path
    ]

    def write(stacked: int) -> list[torch.Tensor]:
        monkeypatch.setattr(_keyed, "STACKED", stacked)
        tensors = [torch.empty(shape) for shape, _, _ in specs]
        tensors[2] = tensors[2].to(torch.bfloat16)
        writer = _keyed.KeyedWriter(seed=9, threads=2)
        for i, (tensor, (_, kind, param)) in enumerate(zip(tensors, specs, strict=True)):
            writer.add(Action(kind, param, zero_row=1 if i == 1 else None), tensor, f"t{i}.weight")  # type: ignore[arg-type]
        writer.run()
        assert writer.drawn == sum(2 * ((t.numel() + 1) >> 1) for t in tensors)
        return tensors

    stacked, flat = write(1 << 14), write(0)
    assert all(torch.equal(a, b) for a, b in zip(stacked, flat, strict=True))
    assert torch.equal(stacked[1][1], torch.zeros(4)) and stacked[1].count_nonzero() == 20
    alone = torchinit.keyed_(torch.empty(6, 4), "normal", 0.5, seed=9, name="t0.weight")
    assert torch.equal(alone, stacked[0]) and not torch.equal(stacked[0], stacked[2].float())


def test_blocks_and_shards_compute_only_their_elements() -> None:
    # keyed_ on a block of a global tensor: equal to the slice of the whole, and the work is the block's
    full = torchinit.keyed_(torch.empty(301, 98), seed=2, name="emb.weight")
    for shape, offset in (((76, 98), (75, 0)), ((301, 25), (0, 49)), ((40, 10), (200, 88)), ((1, 1), (300, 97))):
        block = torchinit.keyed_(torch.empty(shape), seed=2, name="emb.weight", global_shape=(301, 98), offset=offset)
        rows, cols = slice(offset[0], offset[0] + shape[0]), slice(offset[1], offset[1] + shape[1])
        assert torch.equal(block, full[rows, cols]), (shape, offset)
    writer = _keyed.KeyedWriter(2)
    column = torch.empty(301, 25)
    writer.add(Action("normal", 1.0), column, "emb.weight", _keyed_jobs.Region((301, 98), (0, 49)))
    rows = torch.empty(76, 98)
    writer.add(Action("normal", 1.0), rows, "emb.weight", _keyed_jobs.Region((301, 98), (75, 0)))
    writer.run()
    assert writer.drawn <= column.numel() + rows.numel() + 2  # one extra word at each odd end of a run
    assert torch.equal(column, full[:, 49:74]) and torch.equal(rows, full[75:151])


def test_keyed_values_on_cuda_equal_cpu() -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here; the device check is benchmarks/check_cuda_keyed.py")
    for distribution in ("normal", "uniform", "truncated_normal"):
        cpu = torchinit.keyed_(torch.empty(1 << 20), distribution, 0.02, seed=9, name="w")
        gpu = torchinit.keyed_(torch.empty(1 << 20, device="cuda"), distribution, 0.02, seed=9, name="w")
        assert torch.equal(cpu, gpu.cpu()), distribution


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


def _mixed_model() -> nn.Module:
    # large ranges (spans), odd and medium tensors (batches, with differing scales), small even ones of one
    # shape (stacks), a channels_last conv, uniform and truncated normal draws, and a bfloat16 layer
    return nn.ModuleDict({
        "big": nn.Linear(300, 257),
        "conv": nn.Conv2d(16, 32, 3).to(memory_format=torch.channels_last),
        "emb": nn.Embedding(301, 17),
        "low": nn.Linear(40, 30).to(torch.bfloat16),
        **{f"s{i}": nn.Linear(8, 8) for i in range(40)},
        **{f"o{i}": nn.Linear(7, 3 + i) for i in range(20)},
    })  # fmt: skip


class _FreshTensors(TorchDispatchMode):
    """Records every op that returns a tensor sharing no storage with its inputs (an allocation)."""

    def __init__(self) -> None:
        super().__init__()
        self.fresh: list[tuple[str, tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        leaves = pytree.tree_leaves((args, kwargs))
        inputs = {t.untyped_storage().data_ptr() for t in leaves if isinstance(t, torch.Tensor)}
        for t in pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() and t.untyped_storage().data_ptr() not in inputs:
                self.fresh.append((str(func), tuple(t.shape)))
        return out


@pytest.mark.filterwarnings("ignore::torchinit.RecipeMismatchWarning")
@pytest.mark.parametrize("scheme", ["kaiming_relu", "xavier_uniform", "llama_depth"])
def test_keyed_writes_allocate_nothing_once_the_workspaces_are_reserved(
    scheme: str, small_blocks: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every tensor a keyed write needs (scratch buffers, per-piece keys and scales) exists before the first
    # write, so no allocation can fail half-way: while the jobs run, no op returns a fresh tensor, and the
    # workers' workspaces (reserved for the largest pass) grow no buffer.
    mode = _FreshTensors()
    real = _keyed._no_grad

    def watched(job: Callable[[], int], inference: bool = False) -> int:
        with mode:
            return real(job, inference)

    monkeypatch.setattr(_keyed, "_no_grad", watched)
    monkeypatch.setattr(_workspace, "_spare", [])  # fresh workspaces: the first run must reserve everything
    reinit(_mixed_model(), any_model(scheme), seed=3, threads=1)  # one worker: the main thread, where the mode is
    assert mode.fresh == []
    assert len(_workspace._spare) == 1 and _workspace._spare[0].allocations > 0
    grown = _workspace._spare[0].allocations
    monkeypatch.setattr(_keyed, "_no_grad", real)
    reinit(_mixed_model(), any_model(scheme), seed=3, threads=2)  # two workers: one reused, one fresh, both reserved
    counts = sorted(ws.allocations for ws in _workspace._spare)
    assert counts == [grown, grown]


def test_a_failing_scratch_allocation_leaves_the_model_unchanged(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _mixed_model()
    before = state(model)

    def reserve(ws: _workspace.Workspace, needs: _workspace.Needs) -> None:
        raise RuntimeError("out of memory (injected)")

    monkeypatch.setattr(_workspace.Workspace, "reserve", reserve)
    monkeypatch.setattr(_workspace, "_spare", [])
    with pytest.raises(RuntimeError, match="injected"):
        reinit(model, "kaiming_relu", seed=3, threads=2)
    assert equal(state(model), before)


@pytest.mark.filterwarnings("ignore::torchinit.RecipeMismatchWarning")
@pytest.mark.parametrize("scheme", ["llama_depth", "bert", "orthogonal", "xavier_uniform", "gpt2", "kaiming_relu"])
def test_report_entries_rebuild_every_value(scheme: str) -> None:
    # Each entry holds the draw (distribution, param, cut, chunks, chunk_values, zero_row): keyed_ with
    # those arguments gives the parameter bit for bit, a truncated head (cut 3), a padding row, packed
    # orthogonal gates and an LSTM forget-gate bias included.
    model = nn.ModuleDict({
        "emb": nn.Embedding(50, 16, padding_idx=3), "rnn": nn.LSTM(16, 8), "lm_head": nn.Linear(16, 50),
        "fc": nn.Linear(16, 16), "norm": nn.LayerNorm(16),
    })  # fmt: skip
    report = reinit(model, any_model(scheme), seed=11)
    seen = set()
    for e in report:
        p = model.get_parameter(e.path).detach()
        if e.distribution in ("normal", "uniform", "truncated_normal", "orthogonal"):
            assert e.param is not None
            expect = torchinit.keyed_(
                torch.empty_like(p), e.distribution, e.param, cut=e.cut, chunks=e.chunks, seed=11, name=e.path
            )
            if e.zero_row is not None:
                expect[e.zero_row] = 0
            assert torch.equal(p, expect), e
        elif e.chunk_values is not None:
            blocks = p.chunk(len(e.chunk_values))
            assert all(bool((b == v).all()) for b, v in zip(blocks, e.chunk_values, strict=True)), e
        else:
            assert e.distribution == "constant" and bool((p == e.param).all()), e
        seen.update(k for k in ("cut", "zero_row", "chunk_values") if getattr(e, k) is not None)
        seen.update(["chunks"] if e.chunks > 1 else [])
    assert "chunks" in seen  # the LSTM's packed gates
    assert ("cut" in seen) == (scheme == "llama_depth")  # its truncated head
    assert ("zero_row" in seen) == (scheme != "llama_depth")  # torchtitan's embedding has no padding row
    assert report["lm_head.weight"].cut == (3.0 if scheme == "llama_depth" else None)


def test_keyed_chunks_errors() -> None:
    with pytest.raises(InitError, match="chunks must be a positive int dividing dim 0 \\(size 6\\); got chunks=4"):
        torchinit.keyed_(torch.empty(6, 3), "orthogonal", seed=0, name="w", chunks=4)
    with pytest.raises(InitError, match="chunks applies to orthogonal draws only"):
        torchinit.keyed_(torch.empty(6, 3), "normal", seed=0, name="w", chunks=2)
    whole = torchinit.keyed_(torch.empty(6, 3), "orthogonal", seed=0, name="w")
    halves = torchinit.keyed_(torch.empty(6, 3), "orthogonal", seed=0, name="w", chunks=2)
    assert not torch.equal(whole, halves)
    for block in halves.chunk(2):  # each block orthogonal on its own
        torch.testing.assert_close(block.T @ block, torch.eye(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("threads", [1, 2])
def test_keyed_fills_in_and_out_of_inference_mode(threads: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # A model built under torch.inference_mode() is written under it, in every worker; the scratch buffers
    # made there are normal tensors, so later fills outside inference mode (any thread) reuse them.
    monkeypatch.setattr(_workspace, "_spare", [])
    monkeypatch.setattr(_workspace, "_local", threading.local())
    with torch.inference_mode():
        inside = make()
        reinit(inside, "kaiming_relu", seed=2, threads=threads)
        direct = torchinit.keyed_(torch.empty(300001), seed=2, name="x")
    outside = make()
    reinit(outside, "kaiming_relu", seed=2, threads=threads)
    assert equal(state(inside), state(outside))
    assert torch.equal(direct, torchinit.keyed_(torch.empty(300001), seed=2, name="x"))
    other: list[torch.Tensor] = []
    worker = threading.Thread(target=lambda: other.append(torchinit.keyed_(torch.empty(300001), seed=2, name="x")))
    worker.start()
    worker.join()
    assert torch.equal(other[0], direct)


def test_compiling_the_kernels_leaves_the_warning_filters_alone() -> None:
    # The first keyed fill of a process compiles the chains (in the calling thread, before any worker
    # starts) with only torch.jit.script's deprecation notice silenced: the caller's filters are as they were.
    code = (
        "import warnings, torch, torchinit, torchinit._maths.stream as s\n"
        "warnings.simplefilter('error')\n"
        "before = list(warnings.filters)\n"
        "torchinit.reinit(torch.nn.Linear(300, 700), seed=1, threads=2)\n"
        "assert warnings.filters == before, warnings.filters[:2]\n"
        "assert set(s._compiled) == set(s.KERNELS)\n"
        "assert all(isinstance(f, torch.jit.ScriptFunction) for f in s._compiled.values())\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_keyed_fill_of_an_inference_tensor_outside_inference_mode_is_refused() -> None:
    with torch.inference_mode():
        t = torch.empty(300001)
    with pytest.raises(InitError, match="created under torch.inference_mode\\(\\), which cannot be written outside it"):
        torchinit.keyed_(t, seed=0, name="x")
    with torch.inference_mode():
        assert torch.equal(
            torchinit.keyed_(t, seed=0, name="x"), torchinit.keyed_(torch.empty(300001), seed=0, name="x")
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("world", [1, 2, 4])
def test_sharded_init_equals_unsharded(world: int, tmp_path: Path, small_blocks: int) -> None:
    """Real torch.distributed (gloo), `world` processes: DTensor Shard(0)/Shard(1)/Replicate, uneven shards,
    FSDP2, and with 4 ranks a (2, 2) mesh sharded on both dims."""
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
        kinds = ("dtensor", "fsdp", "dtensor2d") if world == 4 else ("dtensor", "fsdp")
        for kind in kinds:
            assert got[kind].keys() == expected.keys()
            for name, value in expected.items():
                assert torch.equal(got[kind][name], value), (kind, name, rank)
            # each rank computed its own elements only (the whole of an orthogonal weight)
            assert got[f"{kind}_drawn"] <= got[f"{kind}_own"], (kind, rank)
            if world > 1:
                assert got[f"{kind}_drawn"] < full.drawn, (kind, rank)
        assert got["warned"] == (world > 1)  # a one-rank mesh splits nothing
        for name, value in unkeyed.items():  # torch's RNG, shared state: each rank keeps its block of one draw
            assert torch.equal(got["unkeyed"][name], value), ("unkeyed", name, rank)


def _keyed_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 256), nn.Conv1d(4, 8, 3), nn.Embedding(100, 16), nn.LSTM(8, 8),  # the LSTM: orthogonal draws
        nn.utils.parametrizations.spectral_norm(nn.Linear(8, 8)),
    )  # fmt: skip


@contextlib.contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@pytest.mark.parametrize(
    "around",
    [lambda: _default_dtype(torch.float64), lambda: _default_dtype(torch.float16), lambda: torch.device("meta")],
    ids=["float64 default", "float16 default", "meta default device"],
)
@pytest.mark.parametrize("scheme", ["kaiming_relu", "orthogonal", "xavier_uniform"])
def test_keyed_values_ignore_the_default_dtype_and_device(
    around: Callable[[], contextlib.AbstractContextManager[None]], scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _keyed_model()
    reinit(expected, scheme, seed=0)
    model = _keyed_model()
    monkeypatch.setattr(_stream, "_tables", {})  # the normal law's lookup table is built afresh inside the block
    with around():  # the draws' own scratch and tables must not follow the caller's defaults
        reinit(model, scheme, seed=0)
    assert torch.get_default_dtype() == torch.float32
    for (key, a), b in zip(expected.state_dict().items(), model.state_dict().values(), strict=True):
        assert b.dtype == a.dtype and b.device == a.device and torch.equal(a, b), key


def test_keyed_orthogonal_calls_from_several_threads_equal_a_call_alone() -> None:
    # torch's (and MKL's) thread count is process-wide: a call restoring it while another call's QRs ran changed
    # their rounding (1 run in 40 differed by ~1e-6 before the calls took turns at their jobs).
    def make() -> nn.Module:
        return nn.Sequential(*(nn.Linear(256, 256) for _ in range(4)))

    reference = make()
    reinit(reference, "orthogonal", seed=3)
    expected = [p.detach().clone() for p in reference.parameters()]
    threads_before = torch.get_num_threads()
    for _ in range(6):
        models = [make() for _ in range(4)]
        workers = [threading.Thread(target=reinit, args=(m, "orthogonal"), kwargs={"seed": 3}) for m in models]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        for model in models:
            assert all(torch.equal(a, b) for a, b in zip(expected, model.parameters(), strict=True))
    assert torch.get_num_threads() == threads_before
