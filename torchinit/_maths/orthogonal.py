r"""(Semi-)orthogonal initializers: torch's ``orthogonal_`` and the delta-orthogonal convolution kernel of Xiao et
al. (2018), in place with ``generator=``."""

from __future__ import annotations

import torch

from torchinit._maths.draw import check_draw, draw_
from torchinit._maths.initializers import check_std, check_tensor
from torchinit._types import InitError, check_divisor


def orthogonal_(
    tensor: torch.Tensor,
    gain: float = 1,
    generator: torch.Generator | None = None,
    *,
    chunks: int = 1,
) -> torch.Tensor:
    r"""A (semi-)orthogonal matrix times ``gain``, for each of ``chunks`` blocks along dim 0.

    Saxe et al. (2014). A drop-in for ``torch.nn.init.orthogonal_``: for float32/float64 the same
    draws and bit-exact values. The tensor is viewed as ``(rows, prod(rest))``; a normal matrix is
    QR-factorized and Q's columns sign-corrected by ``sign(diag(R))`` (Mezzadri 2007), so Q is
    Haar-distributed. Each row (or column, when there are more rows) has norm ``gain``, i.e. element
    std $\mathrm{gain}/\sqrt{\max(\mathrm{rows}, \mathrm{cols})}$.

    Extras: ``chunks`` makes each block of ``rows / chunks`` rows its own orthogonal matrix (RNN gate
    blocks, packed q/k/v); bf16/fp16 tensors are drawn and factorized in float32 and cast (torch's
    QR has no half-precision kernel); channels_last and other strided tensors are written correctly.
    """
    tensor = check_tensor(tensor, generator)
    gain = check_std("gain", gain)
    if tensor.dim() < 2:
        raise InitError(f"orthogonal_ needs a tensor with at least 2 dimensions; got shape={tuple(tensor.shape)}.")
    count = check_divisor("chunks", chunks, tensor.shape[0])
    if tensor.numel() == 0 or tensor.is_meta:
        return tensor
    check_draw(tensor, "orthogonal", gain, source=lambda: f"gain={gain:.6g}")
    return draw_(tensor, "orthogonal", gain, generator, chunks=count)


def delta_orthogonal_(
    tensor: torch.Tensor,
    gain: float = 1.0,
    generator: torch.Generator | None = None,
    *,
    groups: int = 1,
) -> torch.Tensor:
    r"""A delta-orthogonal convolution kernel: zero except its centre tap, an orthogonal matrix times ``gain``.

    Xiao et al. (2018), "Dynamical Isometry and a Mean Field Theory of CNNs: How to Train 10,000-Layer Vanilla
    Convolutional Neural Networks" (Algorithm 2; JAX's ``delta_orthogonal``). For a weight of shape
    $(C_\mathrm{out}, C_\mathrm{in}, k_1, \dots, k_d)$ with $C_\mathrm{out} \ge C_\mathrm{in}$:

    $$W_{:,:,c_1,\dots,c_d} = g\,Q, \quad Q^\top Q = I_{C_\mathrm{in}}, \quad c_i = \lfloor (k_i - 1)/2 \rfloor,$$

    every other tap 0, with $Q$ a Haar-random $C_\mathrm{out} \times C_\mathrm{in}$ matrix with orthonormal
    columns (`orthogonal_`'s construction, one normal draw of that size). The convolution then maps each
    position's channel vector $x$ to $gQx$ at the same position: with stride 1 and padding that keeps the
    centre tap aligned (``padding="same"``, or circular), its input-output Jacobian has every singular value
    equal to $g$, whatever the kernel size and depth of a stack of such layers (dynamical isometry), where a
    Kaiming-initialized kernel's spread widely. The centre is JAX's, $\lfloor (k-1)/2 \rfloor$: the tap
    ``padding="same"`` aligns for even kernels too (`dirac_`, torch's, uses $\lfloor k/2 \rfloor$).

    Args:
        tensor: a convolution weight with at least 3 dimensions, filled in place.
        gain: the singular value $g$ of the centre tap.
        generator: the RNG to draw from; torch's default generator when None.
        groups: the convolution's groups: the weight is $(C_\mathrm{out}, C_\mathrm{in}/g, \dots)$ and each
            group's $(C_\mathrm{out}/g) \times (C_\mathrm{in}/g)$ block is its own orthogonal matrix.

    Returns:
        ``tensor``. A zero-element or meta tensor is returned unchanged.

    Raises:
        InitError: before anything is written, for a tensor with fewer than 3 dimensions, fewer output than
            input channels per group (no $C_\mathrm{out} \times C_\mathrm{in}$ matrix has orthonormal columns
            then; the message names the shape), a ``groups`` that does not divide dim 0, or the checks of
            `orthogonal_`.

    Example:
        >>> w = delta_orthogonal_(torch.empty(16, 8, 3, 3), generator=torch.Generator().manual_seed(0))
        >>> centre = w[:, :, 1, 1]
        >>> bool(torch.allclose(centre.T @ centre, torch.eye(8), atol=1e-5)), w.abs().sum().item() > 0
        (True, True)
    """
    tensor = check_tensor(tensor, generator)
    gain = check_std("gain", gain)
    if tensor.dim() < 3:
        raise InitError(
            f"delta_orthogonal_ needs a convolution weight (out_channels, in_channels, *kernel) with at least 3 "
            f"dimensions; got shape={tuple(tensor.shape)}. Use orthogonal_ for a matrix."
        )
    count = check_divisor("groups", groups, tensor.shape[0])
    rows, cols = tensor.shape[0] // count, tensor.shape[1]
    if rows < cols:
        per_group = f" per group (groups={count})" if count > 1 else ""
        raise InitError(
            f"delta_orthogonal_ needs at least as many output as input channels{per_group}: an orthogonal "
            f"{rows} x {cols} centre tap must have orthonormal columns; got shape={tuple(tensor.shape)}. Use more "
            f"output channels, or orthogonal_ (orthonormal rows, no isometry) for a narrowing layer."
        )
    if tensor.numel() == 0 or tensor.is_meta:
        return tensor
    centre = torch.empty(tensor.shape[:2], dtype=tensor.dtype, device=tensor.device)
    check_draw(centre, "orthogonal", gain, source=lambda: f"gain={gain:.6g}")
    draw_(centre, "orthogonal", gain, generator, chunks=count)  # drawn before tensor is touched
    with torch.no_grad():
        tensor.zero_()
        taps: tuple[slice | int, ...] = (slice(None), slice(None), *((k - 1) // 2 for k in tensor.shape[2:]))
        tensor[taps] = centre
    return tensor
