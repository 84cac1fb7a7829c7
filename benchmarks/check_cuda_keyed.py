"""CUDA check: keyed values on the GPU equal the CPU's, bit for bit, on a real model and on each mapping.

Prepared for a CUDA machine; exits 2 without one. It builds the GPT-2-small shape of benchmarks/models.py (and
HF GPT-2 small when transformers is installed), reinitializes one copy on the CPU and one on CUDA with the same
seed under several schemes and dtypes, and compares every parameter bitwise. Orthogonal weights are compared on
their normal values (the QR differs by the library's rounding, as docs/guides/distributed.md says). Prints, per
case, the number of parameters and elements compared, the fraction that differ and the largest difference in
float32 ulps; exit status 1 if anything but an orthogonal weight differs.

    python benchmarks/check_cuda_keyed.py
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import GPT2Small

import torchinit


def compare(label: str, cpu: nn.Module, gpu: nn.Module, report: torchinit.InitReport) -> bool:
    params = elements = differing = 0
    worst = 0.0
    for (name, a), (_, b) in zip(cpu.named_parameters(), gpu.named_parameters(), strict=True):
        if report[name].distribution == "orthogonal":
            continue
        b = b.detach().cpu()
        params += 1
        elements += a.numel()
        diff = a.detach() != b
        differing += int(diff.sum())
        if diff.any():
            spacing = torch.finfo(a.dtype).eps * a.detach().float().abs().clamp_min(1e-30)
            worst = max(worst, float(((a.detach().float() - b.float()).abs() / spacing).max()))
    print(f"{label:<44} {params:>4} params {elements:>11,} elements  differ {differing / elements:.2e}  "
          f"max {worst:.2f} ulp")  # fmt: skip
    return differing == 0


def main() -> None:
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        raise SystemExit(2)
    print(f"torch {torch.__version__} on {torch.cuda.get_device_name()}")
    ok = True
    for distribution in ("normal", "uniform", "truncated_normal"):
        a = torchinit.keyed_(torch.empty(1 << 24), distribution, 0.02, seed=3, name="w")
        b = torchinit.keyed_(torch.empty(1 << 24, device="cuda"), distribution, 0.02, seed=3, name="w").cpu()
        same = torch.equal(a, b)
        ok &= same
        print(f"keyed_ {distribution:<37} 2^24 elements  {'equal' if same else 'DIFFER'}")
    for scheme in ("kaiming_relu", "kaiming_relu_uniform", torchinit.Scheme(distribution="truncated_normal")):
        for dtype in (torch.float32, torch.bfloat16):
            cpu, gpu = GPT2Small().to(dtype), GPT2Small().to(dtype).cuda()
            report = torchinit.reinit(cpu, scheme, seed=0)  # type: ignore[arg-type]
            torchinit.reinit(gpu, scheme, seed=0)  # type: ignore[arg-type]
            ok &= compare(f"GPT-2 shape {scheme!s:.20} {dtype}", cpu, gpu, report)
    try:
        from transformers import GPT2Config, GPT2LMHeadModel
    except ImportError:
        print("transformers not installed: HF GPT-2 skipped")
    else:
        config = GPT2Config()
        cpu, gpu = GPT2LMHeadModel(config), GPT2LMHeadModel(config).cuda()
        report = torchinit.reinit(cpu, "gpt2", seed=0)
        torchinit.reinit(gpu, "gpt2", seed=0)
        ok &= compare("HF GPT-2 small, recipe gpt2", cpu, gpu, report)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
