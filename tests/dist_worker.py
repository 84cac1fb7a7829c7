"""One rank of the distributed keyed-generation test (run as a subprocess by test_keyed.py).

Usage: python tests/dist_worker.py RANK WORLD PORT OUT_DIR
"""

from __future__ import annotations

import os
import sys
import warnings

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import Replicate, Shard, distribute_tensor

import torchinit
from torchinit._maths import keyed as _keyed
from torchinit._maths import stream as _stream

sys.path.insert(0, os.path.dirname(__file__))
from dist_models import BLOCK, BLOCK_WORDS, PLACEMENTS, PLACEMENTS_2D, SPAN, make


def own(model: nn.Module, report: torchinit.InitReport) -> int:
    """The random words this rank must compute: its local elements of each drawn parameter, or the whole
    tensor for an orthogonal one (a QR of the whole matrix), plus one spare word at each end of a run."""
    total = 0
    for name, p in model.named_parameters():
        shape = report[name].distribution
        if shape == "orthogonal":
            total += p.numel()
        elif shape in ("normal", "uniform", "truncated_normal"):
            local = p.to_local() if hasattr(p, "to_local") else p
            total += local.numel() + 2
    return total


def main() -> None:
    rank, world, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh("cpu", (world,))
    _keyed.BLOCK, _keyed.SPAN, _stream.BLOCK_WORDS = BLOCK, SPAN, BLOCK_WORDS
    results = {}

    # DTensor parameters with explicit placements
    model = make()
    kinds = {"shard0": Shard(0), "shard1": Shard(1), "replicate": Replicate()}
    for path, kind in PLACEMENTS.items():
        owner_path, _, name = path.rpartition(".")
        owner = model.get_submodule(owner_path)
        param = owner._parameters[name]
        owner._parameters[name] = nn.Parameter(distribute_tensor(param.detach(), mesh, [kinds[kind]]))
    report = torchinit.reinit(model, "kaiming_relu", seed=1234)
    results["dtensor"] = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
                          for n, p in model.named_parameters()}  # fmt: skip
    results["dtensor_drawn"] = report.drawn
    results["dtensor_own"] = own(model, report)
    with warnings.catch_warnings(record=True) as caught:  # torch's RNG on shards: warned about
        warnings.simplefilter("always")
        torch.manual_seed(7)  # the same RNG state on every rank
        torchinit.reinit(model, "kaiming_relu")
    results["warned"] = any(issubclass(w.category, torchinit.ShardedWithoutSeedWarning) for w in caught)
    results["unkeyed"] = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
                          for n, p in model.named_parameters()}  # fmt: skip

    # FSDP2
    from torch.distributed.fsdp import fully_shard

    model = make()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for layer in model.children():
            if any(True for _ in layer.parameters()):
                fully_shard(layer, mesh=mesh)
        fully_shard(model, mesh=mesh)
    report = torchinit.reinit(model, "kaiming_relu", seed=1234)
    results["fsdp"] = {n: p.full_tensor().detach().clone() for n, p in model.named_parameters()}
    results["fsdp_drawn"] = report.drawn
    results["fsdp_own"] = own(model, report)

    if world == 4:  # a 2-D mesh, each weight sharded on both mesh dims
        mesh2 = init_device_mesh("cpu", (2, 2))
        model = make()
        for path, pair in PLACEMENTS_2D.items():
            owner_path, _, name = path.rpartition(".")
            owner = model.get_submodule(owner_path)
            param = owner._parameters[name]
            placed = distribute_tensor(param.detach(), mesh2, [kinds[k] for k in pair])
            owner._parameters[name] = nn.Parameter(placed)
        report = torchinit.reinit(model, "kaiming_relu", seed=1234)
        results["dtensor2d"] = {n: (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
                                for n, p in model.named_parameters()}  # fmt: skip
        results["dtensor2d_drawn"] = report.drawn
        results["dtensor2d_own"] = own(model, report)
    torch.save(results, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()
    # Leave without interpreter teardown: on this 2-core VM gloo's background threads were sometimes still
    # joinable at exit ("terminate called without an active exception", exit code -6) after everything above
    # had succeeded and been saved. A failure before this line still exits non-zero or leaves no file.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
