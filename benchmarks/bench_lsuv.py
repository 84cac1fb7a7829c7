"""LSUV's cost as a multiple of one forward pass of the same batch: 0.2's prefix passes vs one calibrating pass.

``reinit(model, "lsuv", data=batch)`` on torchvision's ResNet-18 and a ViT-S/16 (timm's
``vit_small_patch16_224``, or a torch-only model of the same shape where timm is absent), batch 16 at
224x224, CPU. "before" is torchinit 0.2's algorithm (one forward pass up to the layer for every
measurement, kept below as `PrefixLSUV`); "after" is the shipped one. Both run through the same
``reinit`` (orthogonal base draws, the data check, backups), so the difference is the rescaling alone.
Each time is also shown without the base draws (``reinit(model, "orthogonal")``, timed in the same run);
the forward passes the root module ran and the calls per weight layer are counted (these two do not depend
on the machine's load, the times do).

    python benchmarks/bench_lsuv.py [--batch 16] [--repeats 3] [--models resnet18,vit_s16] [--skip-before]

Needs the vision env (torchvision, timm) for the real models. To time the old release's own code rather than
the copy kept here, run the script against a checkout of it, e.g.
``git worktree add ../old <commit> && PYTHONPATH=../old python benchmarks/bench_lsuv.py --skip-before
--tag "before (<commit>)"``; the header says which torchinit was imported.
"""

from __future__ import annotations

import argparse
import copy
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import torchinit
from torchinit.extend import LSUVLayer, LSUVScheme


class _ReachedError(Exception):
    pass


class PrefixLSUV(LSUVScheme):
    """torchinit 0.2's LSUV: an order pass, then for each layer and each rescaling a forward pass up to it."""

    def finish(self, module: nn.Module, report: Any, call: Any) -> None:
        report.lsuv = prefix_lsuv_(module, call.data, self)


def _forward(model: nn.Module, data: Any) -> Any:
    return model(**data) if isinstance(data, dict) else model(data)


def prefix_lsuv_(model: nn.Module, data: Any, scheme: LSUVScheme) -> list[LSUVLayer]:
    dense = {m: n for n, m in model.named_modules() if "weight" in m._parameters and _dense(m)}
    order: dict[nn.Module, str] = {}

    def record(module: nn.Module, args: Any, output: Any) -> None:
        order.setdefault(module, dense[module])

    hooks = [m.register_forward_hook(record) for m in dense]
    model.eval()
    with torch.no_grad():
        _forward(model, data)
        for h in hooks:
            h.remove()
        results = []
        for layer, path in order.items():
            iterations, std = 0, math.nan
            for iterations in range(scheme.max_iter + 1):
                grabbed: list[torch.Tensor] = []

                def grab(m: nn.Module, a: Any, o: torch.Tensor, grabbed: list[torch.Tensor] = grabbed) -> None:
                    grabbed.append(o)
                    raise _ReachedError

                hook = layer.register_forward_hook(grab)
                try:
                    _forward(model, data)
                except _ReachedError:
                    pass
                finally:
                    hook.remove()
                std = float(grabbed[0].float().std())
                if abs(std - 1.0) <= scheme.tol or iterations == scheme.max_iter or not std > 0:
                    break
                layer.weight.mul_(1.0 / std)  # type: ignore[operator]
            results.append(LSUVLayer(path, std, iterations, abs(std - 1.0) <= scheme.tol))
    return results


def _dense(module: nn.Module) -> bool:
    from torchinit._layers.rules import role_of

    role = role_of(module, "weight")
    return role is not None and role.kind == "dense"


class ViTS16(nn.Module):
    """ViT-S/16's shape in plain torch.nn layers (384 wide, 12 blocks of 6 heads, MLP 1536, 1000 classes).

    Not nn.TransformerEncoder: in eval mode its fast path runs the block as one fused op, so no layer in
    it is ever called as a module and no calibration (LSUV's or anyone's hooks) could see it.
    """

    def __init__(self, width: int = 384, depth: int = 12, heads: int = 6) -> None:
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(3, width, 16, stride=16)
        self.cls = nn.Parameter(torch.zeros(1, 1, width))
        self.pos = nn.Parameter(torch.zeros(1, 197, width))
        block = {"norm1": (width,), "qkv": (width, 3 * width), "proj": (width, width), "norm2": (width,),
                 "fc1": (width, 4 * width), "fc2": (4 * width, width)}  # fmt: skip
        self.blocks = nn.ModuleList(
            nn.ModuleDict({k: nn.LayerNorm(*s) if len(s) == 1 else nn.Linear(*s) for k, s in block.items()})
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(len(x), -1, -1), x], dim=1) + self.pos
        n, t, w = x.shape
        for b in self.blocks:
            q, k, v = b["qkv"](b["norm1"](x)).view(n, t, 3, self.heads, w // self.heads).permute(2, 0, 3, 1, 4)
            x = x + b["proj"](F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, w))
            x = x + b["fc2"](F.gelu(b["fc1"](b["norm2"](x))))
        return self.head(self.norm(x)[:, 0])  # type: ignore[no-any-return]


def factories() -> dict[str, Callable[[], nn.Module]]:
    found: dict[str, Callable[[], nn.Module]] = {}
    try:
        import torchvision

        found["resnet18"] = torchvision.models.resnet18
    except ImportError:
        pass
    try:
        import timm

        found["vit_s16"] = lambda: timm.create_model("vit_small_patch16_224")
    except ImportError:
        found["vit_s16"] = ViTS16
    return found


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(name: str, make: Callable[[], nn.Module], batch: int, repeats: int, before: bool, tag: str) -> None:
    torch.manual_seed(0)
    base = make().eval()
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(0))

    def forward() -> None:
        with torch.no_grad():
            base(x)

    def lsuv(model: nn.Module, scheme: LSUVScheme) -> None:
        torchinit.reinit(model, scheme, data=x, generator=torch.Generator().manual_seed(0))

    def orthogonal(model: nn.Module) -> None:
        torchinit.reinit(model, "orthogonal", generator=torch.Generator().manual_seed(0))

    forward()  # warm-up
    forwards = [timed(forward) for _ in range(3)]
    rows: dict[str, tuple[float, float, int, float]] = {}
    variants: dict[str, LSUVScheme] = {tag: LSUVScheme()}
    if before:
        variants["before (0.2's algorithm, copy)"] = PrefixLSUV()
    for label, scheme in variants.items():
        best, base_best, passes, per_layer = math.inf, math.inf, 0, 0.0
        for _ in range(1 if isinstance(scheme, PrefixLSUV) else repeats):
            model = copy.deepcopy(base)
            calls: list[None] = []
            layer_calls: list[None] = []
            model.register_forward_pre_hook(lambda *_: calls.append(None))  # noqa: B023 (this run's list)
            layers = [m for m in model.modules() if "weight" in m._parameters and _dense(m)]
            for m in layers:
                m.register_forward_pre_hook(lambda *_: layer_calls.append(None))  # noqa: B023
            best = min(best, timed(lambda: lsuv(model, scheme)))  # noqa: B023 (called at once)
            passes = len(calls)
            per_layer = len(layer_calls) / max(len(layers), 1)
            base_best = min(base_best, timed(lambda: orthogonal(model)))  # noqa: B023
            forwards.append(timed(forward))
        rows[label] = (best, base_best, passes, per_layer)
    fwd = statistics.median(forwards)
    print(f"\n{name}: one forward pass {fwd:.3f} s (median of {len(forwards)}, interleaved)")
    head = f"{'variant':<32}{'reinit lsuv':>12}{'x forward':>11}{'without base':>14}{'x forward':>11}{'passes':>8}"
    print(f"{head}{'calls/layer':>13}")
    for label, (total, base_time, passes, per_layer) in rows.items():
        rest = total - base_time
        row = f"{label:<32}{total:>10.2f} s{total / fwd:>10.1f}x{rest:>12.2f} s{rest / fwd:>10.1f}x{passes:>8}"
        print(f"{row}{per_layer:>13.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3, help="runs of the new algorithm (min taken)")
    parser.add_argument("--models", default="resnet18,vit_s16")
    parser.add_argument("--skip-before", action="store_true", help="do not time 0.2's algorithm (slow)")
    parser.add_argument("--tag", default="after (one calibrating pass)", help="the row label of reinit(..., 'lsuv')")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} x 3 x 224 x 224")
    print(f"torchinit {torchinit.__version__} from {Path(torchinit.__file__).parent}")
    available = factories()
    for name in args.models.split(","):
        measure(name, available[name], args.batch, args.repeats, not args.skip_before, args.tag)


if __name__ == "__main__":
    main()
