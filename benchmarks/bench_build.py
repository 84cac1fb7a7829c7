"""build(factory, scheme) vs reinit(factory(), scheme): time and peak memory, GPT-2 small on CPU.

Each variant runs in its own subprocess so its peak resident memory is its own. Prints times, the
ratio against reinit(Net()) measured in the same run, and peak memory over the parameter bytes.

    python benchmarks/bench_build.py [--repeats 3] [--scheme kaiming_relu]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def child(variant: str, scheme: str, repeats: int) -> None:
    sys.path.insert(0, HERE)
    import torch
    from models import GPT2Small, parameter_count

    import torchinit

    torch.manual_seed(0)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    times = []
    elements = 0
    for _ in range(repeats):
        start = time.perf_counter()
        if variant == "reinit(Net())":
            model = GPT2Small()
            torchinit.reinit(model, scheme)
        elif variant == "build(Net)":
            model, _ = torchinit.build(GPT2Small, scheme)
        elif variant == "reinit(Net(), seed=0)":
            model = GPT2Small()
            torchinit.reinit(model, scheme, seed=0)
        elif variant == "build(Net, seed=0)":
            model, _ = torchinit.build(GPT2Small, scheme, seed=0)
        elif variant == "Net() with torch defaults":
            model = GPT2Small()
        else:
            raise SystemExit(f"unknown variant {variant!r}")
        times.append(time.perf_counter() - start)
        elements, tensors = parameter_count(model)
        assert bool(model.mask[5, 3]) and not bool(model.mask[3, 5])  # the __init__ buffer survived
        del model
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss
    print(json.dumps({"variant": variant, "times": times, "peak_bytes": peak * 1024, "elements": elements,
                      "tensors": tensors}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scheme", default="kaiming_relu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.scheme, args.repeats)
        return
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, scheme {args.scheme}, {args.repeats} repeats")
    print("before timing: load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg()))
    results = {}
    variants = (
        "Net() with torch defaults",
        "reinit(Net())",
        "build(Net)",
        "reinit(Net(), seed=0)",
        "build(Net, seed=0)",
    )
    for variant in variants:
        out = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--scheme", args.scheme, "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        results[variant] = json.loads(out.strip().splitlines()[-1])
    bases = {v: statistics.median(results[v]["times"]) for v in ("reinit(Net())", "reinit(Net(), seed=0)")}
    elements = results["build(Net)"]["elements"]
    print(f"GPT-2 small shape: {elements / 1e6:.1f} M parameters, {results['build(Net)']['tensors']} tensors, "
          f"{elements * 4 / 2**20:.0f} MiB in fp32")  # fmt: skip
    print(f"{'variant':<28}{'median ms':>10}{'min ms':>9}{'speed vs reinit(Net()) alike':>30}{'peak / params':>15}")
    for variant, r in results.items():
        median = statistics.median(r["times"])
        base = bases["reinit(Net(), seed=0)" if "seed" in variant else "reinit(Net())"]
        print(f"{variant:<28}{median * 1e3:>10.0f}{min(r['times']) * 1e3:>9.0f}{base / median:>29.2f}x"
              f"{r['peak_bytes'] / (elements * 4):>15.2f}")  # fmt: skip
    print("after timing: load average {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
