"""Plots for the CLI (matplotlib, from the optional ``plot`` extra, imported only when asked for)."""

from __future__ import annotations

import io
import math
import re
from typing import Any

FLAG_STYLE = {
    "torch default": {"color": "#d62728", "marker": "X"},
    "too small": {"color": "#9467bd", "marker": "v"},
    "too large": {"color": "#ff7f0e", "marker": "^"},
}
CURRENT, SCHEME = "#1f77b4", "#555555"


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


def require_matplotlib() -> None:
    """Raise `PlotUnavailable` now, before any work, if a plot could not be drawn later."""
    _pyplot()


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


def block_of(path: str, level: int = 1) -> str:
    """The block a layer belongs to: its path up to its ``level``-th numbered part (``layer1.0.conv1`` ->
    ``layer1``, then ``layer1.0``; ``transformer.h.3.attn.c_attn`` -> ``transformer.h.3``); at most the
    path itself."""
    parts = path.split(".")
    numbered = [i for i, part in enumerate(parts) if re.search(r"\d+$", part)]
    if not numbered:
        return path
    return ".".join(parts[: numbered[min(level, len(numbered)) - 1] + 1])


def groups(paths: list[str]) -> list[tuple[str, int, int]]:
    """Consecutive runs of the same block: (short label, first index, last index).

    A label is the block's last two parts when it ends in a number (``h.3``, ``layers.0``), else its last part
    (``wte``, ``lm_head``, ``layer1``); the full block path where two blocks would share a label.
    """
    runs: list[tuple[str, int, int]] = []
    for i, path in enumerate(paths):
        block = block_of(path)
        if runs and runs[-1][0] == block:
            runs[-1] = (block, runs[-1][1], i)
        else:
            runs.append((block, i, i))
    short = {block: _short(block) for block, _, _ in runs}
    owners: dict[str, set[str]] = {}
    for block, label in short.items():
        owners.setdefault(label, set()).add(block)
    return [(short[b] if len(owners[short[b]]) == 1 else b, first, last) for b, first, last in runs]


def _short(block: str) -> str:
    parts = block.split(".")
    return ".".join(parts[-2:] if len(parts) > 1 and parts[-1].isdigit() else parts[-1:])


ROTATED_IN, GAP_IN, FONT_PT = 0.14, 0.05, 7.5
"""The spacing a rotated tick label needs, the least gap between horizontal ones, their size."""


def _text_inches(text: str) -> float:
    from matplotlib.textpath import TextPath

    return float(TextPath((0, 0), text, size=FONT_PT).get_extents().width) / 72


def _thin(centers: list[float], widths: list[float]) -> list[int]:
    """The labels to show: the first, the last where it fits, and greedily each between that overlaps none kept."""

    def clear(i: int, j: int) -> bool:
        return abs(centers[i] - centers[j]) >= (widths[i] + widths[j]) / 2 + GAP_IN

    if not centers:
        return []
    last = len(centers) - 1
    reserve = last > 0 and clear(0, last)
    kept = [0]
    for i in range(1, last):
        if clear(i, kept[-1]) and (not reserve or clear(i, last)):
            kept.append(i)
    if last > 0 and clear(last, kept[-1]):
        kept.append(last)
    return kept


def _mark_groups(ax: Any, paths: list[str], width_in: float, label: bool) -> None:
    """Alternate shading per block, thin lines between the blocks inside one, and one label per block:
    horizontal where they fit (at most a tenth dropped), else rotated; never two that overlap."""
    runs = groups(paths)
    for k, (_, a, b) in enumerate(runs):
        if k % 2:
            ax.axvspan(a - 0.5, b + 0.5, color="#000000", alpha=0.045, lw=0)
    inner = [i for i in range(1, len(paths)) if block_of(paths[i], 2) != block_of(paths[i - 1], 2)]
    if len(inner) <= 80:  # the blocks inside a stage (ResNet's bottlenecks): thin lines
        for i in inner:
            ax.axvline(i - 0.5, color="#000000", alpha=0.12, lw=0.6)
    ax.tick_params(axis="x", length=0)  # the shading and lines mark the blocks; tick marks would only add noise
    if not label:
        return  # a panel above the one that labels the shared axis
    scale = width_in / max(len(paths), 1)
    centers = [(a + b) / 2 * scale for _, a, b in runs]
    flat = _thin(centers, [_text_inches(name) for name, _, _ in runs])
    horizontal = len(flat) >= 0.85 * len(runs)
    kept = flat if horizontal else _thin(centers, [ROTATED_IN] * len(runs))
    ax.set_xticks([(runs[k][1] + runs[k][2]) / 2 for k in kept])
    ax.set_xticklabels([runs[k][0] for k in kept], rotation=0 if horizontal else 90, fontsize=7.5)


def _series(result: dict[str, Any], everything: bool) -> tuple[list[str], list[float], list[float | None]]:
    """Paths and (current, scheme) stds in forward order: each layer's first call, or every call of everything."""
    acts = [a for a in result.get("activations", []) if everything or (a["layer"] and a["call"] == 1)]
    names = [a["path"] + (f" #{a['call']}" if a["call"] > 1 else "") for a in acts]
    return names, [a["std"] for a in acts], [a.get("scheme_std") for a in acts]


def audit_figure(result: dict[str, Any], *, everything: bool = False) -> bytes:
    """The audit as a PNG: weight std / scheme std per layer (band shaded, flagged layers marked), then
    activation std (and weight-gradient std) by depth under the current init and under the scheme.

    Layers are in forward order (module order without a pass), grouped by block (``layer1.0``, ``h.3``) with
    one label per block, so a ResNet-50 or a GPT-2 small fits a page width. ``everything`` plots every
    module call's output (ReLUs, norms, reused modules' later calls) instead of the layers' only.
    """
    plt = _pyplot()
    layers = {layer["path"]: layer for layer in result["layers"]}
    order = [a["path"] for a in result.get("activations", []) if a["layer"] and a["call"] == 1]
    order += [p for p in layers if p not in set(order)]  # layers the pass never called go last
    has_pass = "activations" in result
    grads = {g["path"]: g for g in result.get("gradients", [])}
    panels = 1 + has_pass + bool(grads)
    width = 10.0
    fig, axes = plt.subplots(
        panels, 1, figsize=(width, 1.2 + 2.3 * panels), sharex=not everything, squeeze=False,
        gridspec_kw={"height_ratios": [1.0] * panels}, layout="constrained",
    )  # fmt: skip
    axes = axes[:, 0]
    xs = range(len(order))
    low, high = result["band"]

    ax = axes[0]
    ratios = [layers[p]["ratio"] for p in order]
    ax.axhspan(low, high, color="#2ca02c", alpha=0.12, lw=0, label=f"band {low:g}x-{high:g}x")
    ax.axhline(1.0, color=SCHEME, lw=1.2, ls="--", label=f"{result['scheme']} (= 1)")
    ok = [(x, r) for x, r, p in zip(xs, ratios, order, strict=True) if r is not None and not layers[p]["flag"]]
    ax.scatter([x for x, _ in ok], [r for _, r in ok], s=14, color=CURRENT, label="current init", zorder=3)
    for reason, style in FLAG_STYLE.items():
        hit = [(x, r) for x, r, p in zip(xs, ratios, order, strict=True) if layers[p]["flag"] == reason]
        if hit:
            ax.scatter(
                [x for x, _ in hit], [r for _, r in hit], s=26, zorder=4, **style,
                label=f"flagged: {reason} ({len(hit)})",
            )  # fmt: skip
    ax.set_yscale("log")
    known = [r for r in ratios if r is not None and 0 < r < math.inf]  # an inf or NaN weight is not drawn
    ax.set_ylim(min([low / 1.6, *(r / 1.3 for r in known)]), max([high * 1.6, *(r * 1.3 for r in known)]))
    ax.set_ylabel("weight std / scheme std")
    flagged = sum(bool(layer["flag"]) for layer in layers.values())
    ax.set_title(
        f"{result['target']}: current init vs {result['scheme']}; {flagged} of {len(layers)} layers flagged",
        fontsize=10, loc="left",
    )  # fmt: skip
    ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    _finish(ax, order, width, label=panels == 1 or everything)

    if has_pass:
        ax = axes[1]
        names, current, scheme = _series(result, everything)
        if not everything:
            index = {n: i for i, n in enumerate(order)}
            pairs = sorted((index[n], c, s) for n, c, s in zip(names, current, scheme, strict=True) if n in index)
            at, current, scheme = [p[0] for p in pairs], [p[1] for p in pairs], [p[2] for p in pairs]
        else:
            at = list(range(len(names)))
        ax.plot(at, current, color=CURRENT, marker=".", ms=5, lw=0.9, label="current init")
        if any(s is not None for s in scheme):
            ax.plot(at, [s if s is not None else float("nan") for s in scheme], color=SCHEME, ls="--", lw=1.2,
                    label=result["scheme"])  # fmt: skip
        for reason, style in FLAG_STYLE.items() if not everything else ():
            hit = [(x, c) for x, c in zip(at, current, strict=True) if layers[order[x]]["flag"] == reason]
            if hit:
                ax.scatter(
                    [x for x, _ in hit], [c for _, c in hit], s=18, zorder=4, **style, label=f"flagged: {reason}"
                )
        ax.set_yscale("log")
        ax.set_ylabel("output std" if not everything else "module output std")
        ax.set_title(
            f"activation std by depth ({'every module call' if everything else 'each layer, first call'}); "
            f"{result['mode']} mode, seed {result['seed']}",
            fontsize=9, loc="left",
        )  # fmt: skip
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        _finish(ax, names if everything else order, width, label=everything or panels == 2)
        if everything:
            ax.set_xlabel("module calls in order", fontsize=9)

    if grads:
        ax = axes[-1]
        at = [i for i, p in enumerate(order) if p in grads]
        ax.plot(at, [grads[order[i]]["std"] for i in at], color=CURRENT, marker=".", ms=4, lw=1.2,
                label="current init")  # fmt: skip
        theirs = [grads[order[i]].get("scheme_std") for i in at]
        if any(t is not None for t in theirs):
            ax.plot(at, [t if t is not None else float("nan") for t in theirs], color=SCHEME, ls="--", lw=1.2,
                    label=result["scheme"])  # fmt: skip
        ax.set_yscale("log")
        ax.set_ylabel("weight grad std")
        ax.set_title(f"weight gradient std; backward of {result['loss']}", fontsize=9, loc="left")
        ax.legend(fontsize=7.5, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
        _finish(ax, order, width, label=True)
    if not everything or panels != 2:
        axes[-1].set_xlabel("layers in forward order, one label per block")
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=150)
    plt.close(fig)
    return buffer.getvalue()


def _finish(ax: Any, paths: list[str], width: float, label: bool) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    low, high = ax.get_ylim()
    decades = math.log10(high / low) if low > 0 and high > low else 1.0
    ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2.5 else (1.0,)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.set_xlim(-0.5, max(len(paths) - 0.5, 0.5))
    _mark_groups(ax, paths, width * 0.8, label)


def plot_audit(result: dict[str, Any], path: str, *, everything: bool = False) -> None:
    """`audit_figure` written to ``path``."""
    with open(path, "wb") as file:
        file.write(audit_figure(result, everything=everything))
