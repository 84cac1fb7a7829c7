"""The same reinit workloads timed under two checkouts of torchinit, alternating, to show a change costs nothing.

    python benchmarks/bench_checkouts.py BASE_DIR [HEAD_DIR] [--rounds 7]

BASE_DIR and HEAD_DIR are checkouts (``git worktree add /tmp/base <commit>``); HEAD_DIR defaults to this one.
Each round runs one fresh process per checkout, base and head in turn, so drift and load hit both alike; each
process times every workload (min of 5 repeats inside the process). Printed per workload: min and median over
rounds for each checkout, head/base ratios of both, and per-element rates where elements are drawn.

Workloads (both sides do the same work; nothing is tied, so no tensor is drawn twice by either):
- per module: 5000 x Linear(16, 16), reinit kaiming_relu from torch's RNG, and keyed (seed=0);
- GPT-2 small's parameter tree without the tied head (124.4 M elements), reinit kaiming_relu from torch's RNG,
  and keyed (seed=0, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def _worker() -> None:
    import torch
    from torch import nn

    import torchinit

    class Block(nn.Module):
        def __init__(self, width: int) -> None:
            super().__init__()
            self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
            self.c_attn, self.c_proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
            self.c_fc, self.mlp_proj = nn.Linear(width, 4 * width), nn.Linear(4 * width, width)

    gpt2 = nn.ModuleDict({
        "wte": nn.Embedding(50257, 768), "wpe": nn.Embedding(1024, 768),
        "h": nn.ModuleList(Block(768) for _ in range(12)), "ln_f": nn.LayerNorm(768),
    })  # fmt: skip
    small = nn.Sequential(*(nn.Linear(16, 16) for _ in range(5000)))
    elements = sum(p.numel() for p in gpt2.parameters())
    runs = {
        "per module, torch RNG (us/module)": (lambda: torchinit.reinit(small, "kaiming_relu"), 5000, 1e6, 0),
        "per module, keyed (us/module)": (lambda: torchinit.reinit(small, "kaiming_relu", seed=0), 5000, 1e6, 0),
        "GPT-2 small, torch RNG (ms)": (lambda: torchinit.reinit(gpt2, "kaiming_relu"), 1, 1e3, elements),
        "GPT-2 small, keyed 2 threads (ms)": (
            lambda: torchinit.reinit(gpt2, "kaiming_relu", seed=0, threads=2), 1, 1e3, elements,
        ),
    }  # fmt: skip
    torch.manual_seed(0)
    out = {}
    for name, (run, count, unit, _) in runs.items():
        run()  # warm-up: compiled kernels, caches
        best = float("inf")
        for _ in range(5):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        out[name] = best / count * unit
    out["_elements"] = elements
    print(json.dumps(out))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("base")
    parser.add_argument("head", nargs="?", default=os.path.dirname(HERE))
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    results: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
    elements = 0
    for _ in range(args.rounds):
        for side in ("base", "head"):
            env = {**os.environ, "PYTHONPATH": os.path.abspath(getattr(args, side))}
            done = subprocess.run(
                [sys.executable, __file__, "--worker"], env=env, capture_output=True, text=True, check=True
            )
            for name, value in json.loads(done.stdout).items():
                if name == "_elements":
                    elements = value
                else:
                    results[side].setdefault(name, []).append(value)
    load = os.getloadavg()
    print(f"torch: {args.base} (base) vs {args.head} (head); {args.rounds} rounds; load {load[0]:.2f} {load[1]:.2f}")
    print(f"{'workload':<36}{'base min':>10}{'head min':>10}{'base med':>10}{'head med':>10}{'min ratio':>11}"
          f"{'med ratio':>11}")  # fmt: skip
    for name, base in results["base"].items():
        head = results["head"][name]
        bmin, hmin, bmed, hmed = min(base), min(head), statistics.median(base), statistics.median(head)
        print(
            f"{name:<36}{bmin:>10.1f}{hmin:>10.1f}{bmed:>10.1f}{hmed:>10.1f}{hmin / bmin:>10.3f}x{hmed / bmed:>10.3f}x"
        )
        if name.startswith("GPT-2"):
            print(f"{'':<36}rates (min): base {elements / bmin / 1e6:.3f} Gelem/s, head {elements / hmin / 1e6:.3f}")


if __name__ == "__main__":
    if sys.argv[1:] == ["--worker"]:
        _worker()
    else:
        main()
