"""Plots for the CLI (matplotlib, from the optional ``plot`` extra, imported only when asked for)."""

from __future__ import annotations

from typing import Any


class PlotUnavailable(RuntimeError):  # noqa: N818 (a user-facing condition, not a bug)
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise PlotUnavailable(
            "plotting needs matplotlib: pip install 'torchinit[plot]' (or pip install matplotlib)"
        ) from error
    return plt


def plot_demo(result: dict[str, Any], path: str) -> None:
    """Activation std by depth, one line per scheme, MLP and conv side by side (log scale)."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, key in zip(axes, ("mlp", "conv"), strict=True):
        for name, stds in result[key]["std"].items():
            ax.semilogy(range(1, len(stds) + 1), stds, marker=".", label=name)
        ax.set_title(result[key]["layers"], fontsize=9)
        ax.set_xlabel("depth")
        ax.set_ylabel("post-ReLU activation std")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_audit(result: dict[str, Any], path: str) -> None:
    """Per-layer activation std (and gradient std) from an audit's forward/backward pass."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 0.25 * len(result["activations"])), 4), constrained_layout=True)
    acts = result["activations"]
    ax.semilogy(range(len(acts)), [a["std"] for a in acts], marker="o", label="activation std")
    grads = [g for g in result.get("gradients", []) if g["std"] is not None]
    if grads:
        index = {a["path"]: i for i, a in enumerate(acts)}
        xs = [index[g["path"]] for g in grads if g["path"] in index]
        ax.semilogy(xs, [g["std"] for g in grads if g["path"] in index], marker="x", label="weight gradient std")
    ax.set_xticks(range(len(acts)))
    ax.set_xticklabels([a["path"] for a in acts], rotation=90, fontsize=7)
    ax.set_title(f"{result['target']} ({result['scheme']} reference)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)
    plt.close(fig)
