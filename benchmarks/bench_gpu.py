"""GPU: reinit of a Llama-7B-shaped tree vs one flat normal_ over the same bytes; truncated normal speed.

Prepared for a CUDA machine (an H100/H200 runs it in well under a minute). The tree is built on
meta and materialized with to_empty on the GPU, then timed (CUDA events, min of --repeats):
torch's reset_parameters loop, one flat normal_ over the same number of elements, reinit without
and with a seed (the keyed stream v2, eager torch kernels); and on a 4 GiB fp32 tensor
torchinit.truncated_normal_ vs torch's trunc_normal_ vs normal_. Targets: reinit <= 1.15x the flat normal_,
keyed reinit <= 1.2x (torch's normal_ is Philox, also counter-based); truncated_normal_ >= 3x trunc_normal_.
benchmarks/check_cuda_keyed.py checks that the keyed values equal the CPU's.

    python benchmarks/bench_gpu.py [--repeats 5] [--scale 1.0] [--device cuda]

``--device cpu --scale 0.05`` is a dry run of the same code on the CPU.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import Llama, parameter_count

import torchinit


def timer(device: torch.device, run: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats + 1):  # the first run warms up
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            run()
            end.record()
            torch.cuda.synchronize()
            elapsed = start.elapsed_time(end) / 1e3
        else:
            t0 = time.perf_counter()
            run()
            elapsed = time.perf_counter() - t0
        best = min(best, elapsed)
    return best


def reset_loop(model: nn.Module) -> None:
    for m in model.modules():
        if hasattr(m, "reset_parameters") and any(True for _ in m.parameters(recurse=False)):
            m.reset_parameters()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device; run with --device cpu --scale 0.05 for a dry run")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"torch {torch.__version__} on {name}")

    with torch.device("meta"):
        model = Llama(args.scale)
    model.to_empty(device=device)
    elements, tensors = parameter_count(model)
    print(f"Llama-7B shape x{args.scale}: {elements / 1e9:.2f} B parameters, {tensors} tensors")
    flat = torch.empty(elements, device=device)
    runs: dict[str, Callable[[], object]] = {
        "one flat normal_ over the same elements": flat.normal_,
        "reset_parameters loop (torch)": functools.partial(reset_loop, model),
        "reinit kaiming_relu": functools.partial(torchinit.reinit, model, "kaiming_relu"),
        "reinit kaiming_relu seed=0": functools.partial(torchinit.reinit, model, "kaiming_relu", seed=0),
    }
    times = {label: timer(device, run, args.repeats) for label, run in runs.items()}
    runs.clear()  # frees the flat tensor and the model before the 4 GiB test
    flat = model = None  # type: ignore[assignment]
    base = times["one flat normal_ over the same elements"]
    print(f"{'variant':<44}{'ms':>9}{'x flat normal_':>16}")
    for label, t in times.items():
        print(f"{label:<44}{t * 1e3:>9.2f}{t / base:>16.2f}")

    n = int((4 << 30) // 4 * min(1.0, args.scale * 4))
    big = torch.empty(n, device=device)
    tn = {
        "normal_": timer(device, lambda: big.normal_(0, 0.02), args.repeats),
        "torch trunc_normal_(std=1)": timer(device, lambda: nn.init.trunc_normal_(big), args.repeats),
        "torchinit truncated_normal_(std=1)": timer(device, lambda: torchinit.truncated_normal_(big), args.repeats),
    }
    print(f"\n{n * 4 / 2**30:.2f} GiB fp32{'':<24}{'ms':>9}{'TB/s':>8}{'speed vs trunc_normal_':>24}")
    for label, t in tn.items():
        print(f"{label:<44}{t * 1e3:>9.2f}{n * 4 / t / 1e12:>8.2f}{tn['torch trunc_normal_(std=1)'] / t:>23.2f}x")


if __name__ == "__main__":
    main()
