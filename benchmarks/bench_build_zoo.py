"""build(factory, scheme, seed=0) vs reinit(factory(), scheme, seed=0) on models that run their own init.

Hugging Face models draw every parameter again in ``post_init`` (and torchvision's and timm's models in
their init loops) after torch's layer defaults; ``build`` skips both and draws once. Ratios are against
``reinit(factory())`` and plain construction measured in the same run (min of --repeats, interleaved).

    python benchmarks/bench_build_zoo.py [--repeats 5]          # HF GPT-2 small (124 M), main env
    python benchmarks/bench_build_zoo.py --vision [--repeats 5]  # torchvision ResNet-50, vision env
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch import nn

import torchinit


def factories(vision: bool) -> dict[str, Callable[[], nn.Module]]:
    if vision:
        import torchvision

        return {"torchvision resnet50": torchvision.models.resnet50}
    import transformers

    transformers.logging.set_verbosity_error()
    config = transformers.GPT2Config()  # GPT-2 small: 12 layers, 768 wide, vocab 50257, tied head
    return {"HF GPT-2 small": lambda: transformers.GPT2LMHeadModel(config)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--vision", action="store_true")
    parser.add_argument("--scheme", default="kaiming_gelu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, scheme {args.scheme}, min of {args.repeats}")
    for name, factory in factories(args.vision).items():
        runs: dict[str, Callable[[], object]] = {
            "construct (the model's own init)": factory,
            "reinit(factory(), seed=0)": lambda f=factory: torchinit.reinit(f(), args.scheme, seed=0),
            "build(factory, seed=0)": lambda f=factory: torchinit.build(f, args.scheme, seed=0),
        }
        best = {k: float("inf") for k in runs}
        for _ in range(args.repeats):
            for key, run in runs.items():
                start = time.perf_counter()
                run()
                best[key] = min(best[key], time.perf_counter() - start)
        base = best["reinit(factory(), seed=0)"]
        print(f"\n{name}")
        print(f"{'variant':<36}{'ms':>10}{'speed vs reinit(factory())':>30}")
        for key, t in best.items():
            print(f"{key:<36}{t * 1e3:>10.0f}{base / t:>29.2f}x")


if __name__ == "__main__":
    main()
