"""Keyed, parallel reinit vs torch's own reset_parameters loop; per-module overhead; growth.

Equal work: the GPT-2 small tree is untied (``models.GPT2Small``), so every variant draws the same 163.0 M
elements once (``--tied`` reproduces the 0.2 figures, where torch's loop drew the tied 38.6 M-element table twice:
163.0 M draws against torchinit's 124.4 M). Every ratio is against baselines measured in the same run, variants
interleaved over ``--repeats``; each row shows min and median time, the per-element rate (elements drawn or
written per second, Gelem/s) and the ratio to torch's loop at min and at median. The machine and its load
(``os.getloadavg``, as ``uptime`` prints it) are printed before and after timing, with the CPU time other
processes took from the cores meanwhile (from ``/proc/stat``).

    python benchmarks/bench_keyed.py [--repeats 9] [--tied]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import GPT2Small, parameter_count

import torchinit
from torchinit._maths import keyed as _keyed


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


def timed(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for run in runs.values():  # one untimed warm-up each: compiling, first-touch page faults, caches
        run()
    for _ in range(repeats):  # interleaved, so drift hits every variant alike
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            samples[name].append(time.perf_counter() - start)
    return samples


def table(
    title: str, samples: dict[str, list[float]], base: str, work: dict[str, int], unit: float = 1e3, suffix: str = "ms"
) -> None:
    """One row per variant: min and median time, Gelem/s at the min, ratio to ``base`` at min and at median.

    ``work``: elements each variant draws or writes per run (0: no rate shown)."""
    print(f"\n{title}")
    print(
        f"{'variant':<44}{suffix + ' min':>14}{suffix + ' median':>14}{'Gelem/s':>9}"
        f"{'x base (min)':>14}{'(median)':>10}"
    )
    low, mid = min(samples[base]), statistics.median(samples[base])
    for name, times in samples.items():
        best, median = min(times), statistics.median(times)
        rate = f"{work.get(name, 0) / best / 1e9:9.3f}" if work.get(name) else f"{'':>9}"
        print(f"{name:<44}{best * unit:>14.1f}{median * unit:>14.1f}{rate}{low / best:>13.2f}x{mid / median:>9.2f}x")


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{model}, os.cpu_count()={os.cpu_count()}, {platform.system()} {platform.release()}"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min)"


def cpu_seconds() -> tuple[float, float]:
    """(busy CPU seconds of the whole machine, of this process) so far: their difference over a run is what other
    processes took from the cores while we timed (0 where /proc/stat is missing)."""
    own = sum(os.times()[:2])
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return own, own
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), own


def others(before: tuple[float, float], seconds: float) -> str:
    machine, own = cpu_seconds()
    taken = max(0.0, (machine - before[0]) - (own - before[1]))
    cores = os.cpu_count() or 1
    return f"other processes used {taken:.1f} CPU-s of {seconds * cores:.1f} ({100 * taken / (seconds * cores):.0f}%)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--tied", action="store_true", help="tie lm_head to wte (the unequal 0.2 comparison)")
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, torch.get_num_threads()={threads}; {machine()}")
    print(f"before timing: {load()}")
    began, wall = cpu_seconds(), time.perf_counter()

    model = GPT2Small(tied=args.tied)
    elements, tensors = parameter_count(model)
    tied = model.lm_head.weight is model.wte.weight
    torch_draws = elements + (model.lm_head.weight.numel() if tied else 0)  # the reset loop redraws a tied table
    print(
        f"GPT-2 small shape, lm_head {'tied' if tied else 'untied'}: {elements / 1e6:.1f} M parameters, {tensors} "
        f"tensors; torch's loop draws {torch_draws / 1e6:.1f} M, torchinit {elements / 1e6:.1f} M"
    )
    runs: dict[str, Callable[[], object]] = {
        "reset_parameters loop (torch)": lambda: reset_loop(model),
        "fill_ per parameter (memory floor)": lambda: fill_loop(model),
        "reinit kaiming_relu (torch RNG)": lambda: torchinit.reinit(model, "kaiming_relu"),
        "reinit kaiming_relu seed=0 threads=1": lambda: torchinit.reinit(model, "kaiming_relu", seed=0, threads=1),
        f"reinit kaiming_relu seed=0 threads={threads}": lambda: torchinit.reinit(model, "kaiming_relu", seed=0),
        # uniform dense weights, N(0, 1) embeddings: the distribution mix of torch's loop (kaiming_uniform_ Linear)
        "reinit kaiming_relu_uniform seed=0 threads=1": lambda: torchinit.reinit(
            model, "kaiming_relu_uniform", seed=0, threads=1
        ),
        f"reinit kaiming_relu_uniform seed=0 threads={threads}": lambda: torchinit.reinit(
            model, "kaiming_relu_uniform", seed=0
        ),
        f"reinit truncated_normal seed=0 threads={threads}": lambda: torchinit.reinit(
            model, torchinit.Scheme(distribution="truncated_normal"), seed=0
        ),
    }
    work = dict.fromkeys(runs, elements) | {"reset_parameters loop (torch)": torch_draws}
    samples = timed(runs, args.repeats)
    table(
        f"GPT-2 small, whole-model init (min and median of {args.repeats})", samples, runs.__iter__().__next__(), work
    )

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
    per_module = {k: [t / 5000 for t in v] for k, v in timed(runs, args.repeats).items()}
    table("Per-module overhead, 5000 x Linear(16, 16)", per_module, "reset_parameters loop (torch)", {}, 1e6, "us/mod")

    print("\nGrowth: reinit time per module as the model grows (Linear(16, 16) modules)")
    for count in (1000, 10000):
        many = nn.ModuleList([nn.Linear(16, 16) for _ in range(count)])
        best = min(timed({"reinit": lambda many=many: torchinit.reinit(many, "kaiming_relu")}, args.repeats)["reinit"])
        print(f"  {count:>6} modules: {best * 1e3:8.1f} ms total, {best / count * 1e6:6.1f} us/module")
    per_thread(args.repeats)
    print(f"\nafter timing: {load()}; {others(began, time.perf_counter() - wall)}")


def per_thread(repeats: int) -> None:
    """One thread, one flat 2^24-element float32 tensor: the keyed stream's per-element rate against torch's own
    sequential generator, distribution by distribution (torch's reset loop is mostly uniform_, kaiming_relu
    normal)."""
    from torchinit._maths import stream as _stream
    from torchinit._maths import workspace as _workspace

    n = 1 << 24
    dest = torch.empty(n)
    ws = _workspace.Workspace()
    start, gamma = _stream.stream_key(0, "bench")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs: dict[str, Callable[[], object]] = {
            "torch normal_": lambda: dest.normal_(),
            "keyed normal": lambda: _stream.range_values("normal", 2.0, start, gamma, 0, n, dest, 1.0, ws),
            "torch uniform_": lambda: dest.uniform_(),
            "keyed uniform": lambda: _stream.range_values("uniform", 2.0, start, gamma, 0, n, dest, 1.0, ws),
        }
        samples = timed(runs, repeats)
    finally:
        torch.set_num_threads(previous)
    table("Per thread: one thread, 2^24 float32 elements", samples, "torch normal_", dict.fromkeys(runs, n))


if __name__ == "__main__":
    main()
