"""Keyed, parallel reinit vs torch's own reset_parameters loop; per-module overhead; growth.

All ratios are against baselines measured in the same run (min of --repeats, interleaved):
torch's reset_parameters loop and a raw fill_ per parameter (the memory-write floor).

    python benchmarks/bench_keyed.py [--repeats 9]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import GPT2Small, parameter_count

import torchinit
from torchinit import _keyed


def reset_loop(model: nn.Module) -> None:
    for m in model.modules():
        if "reset_parameters" in type(m).__dict__ or any(
            "reset_parameters" in c.__dict__ for c in type(m).__mro__[1:-2]
        ):
            m.reset_parameters()  # type: ignore[operator]


def fill_loop(model: nn.Module) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(0.5)


def timed(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):  # interleaved, so drift hits every variant alike
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def table(title: str, best: dict[str, float], base: str, unit: float = 1e3, suffix: str = "ms") -> None:
    print(f"\n{title}")
    print(f"{'variant':<44}{suffix:>10}{'speed vs ' + base:>30}")
    for name, t in best.items():
        print(f"{name:<44}{t * unit:>10.1f}{best[base] / t:>29.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, torch.get_num_threads()={threads}, os.cpu_count()={os.cpu_count()}")

    model = GPT2Small()
    elements, tensors = parameter_count(model)
    print(f"GPT-2 small shape: {elements / 1e6:.1f} M parameters, {tensors} tensors")
    runs: dict[str, Callable[[], object]] = {
        "reset_parameters loop (torch)": lambda: reset_loop(model),
        "fill_ per parameter (memory floor)": lambda: fill_loop(model),
        "reinit kaiming_relu (torch RNG)": lambda: torchinit.reinit(model, "kaiming_relu"),
        "reinit kaiming_relu seed=0 threads=1": lambda: torchinit.reinit(model, "kaiming_relu", seed=0, threads=1),
        f"reinit kaiming_relu seed=0 threads={threads}": lambda: torchinit.reinit(model, "kaiming_relu", seed=0),
        f"reinit truncated_normal seed=0 threads={threads}": lambda: torchinit.reinit(
            model, torchinit.Scheme(distribution="truncated_normal"), seed=0
        ),
    }
    best = timed(runs, args.repeats)
    table("GPT-2 small, whole-model init", best, "reset_parameters loop (torch)")
    for name, t in best.items():
        print(f"  {name:<42} {elements / t / 1e9:.3f} Gelem/s")

    small = nn.ModuleList([nn.Linear(16, 16) for _ in range(5000)])
    runs = {
        "reset_parameters loop (torch)": lambda: reset_loop(small),
        "reinit kaiming_relu (torch RNG)": lambda: torchinit.reinit(small, "kaiming_relu"),
        "reinit kaiming_relu seed=0": lambda: torchinit.reinit(small, "kaiming_relu", seed=0),
        "reinit seed=0, stream keys not cached": lambda: (
            _keyed._key.cache_clear(),
            torchinit.reinit(small, "kaiming_relu", seed=0),
        ),
    }
    best = {k: v / 5000 for k, v in timed(runs, args.repeats).items()}
    table("Per-module overhead, 5000 x Linear(16, 16)", best, "reset_parameters loop (torch)", 1e6, "us/module")

    print("\nGrowth: reinit time per module as the model grows (Linear(16, 16) modules)")
    for count in (1000, 10000):
        many = nn.ModuleList([nn.Linear(16, 16) for _ in range(count)])
        best = timed({"reinit": lambda many=many: torchinit.reinit(many, "kaiming_relu")}, args.repeats)
        print(
            f"  {count:>6} modules: {best['reinit'] * 1e3:8.1f} ms total, {best['reinit'] / count * 1e6:6.1f} us/module"
        )


if __name__ == "__main__":
    main()
