"""InitReport: what reinit did to every parameter, as a table and as records."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from torchinit._maths.fans import Fans
from torchinit._schemes.width import ModelRef, Width, param_groups

if TYPE_CHECKING:
    from torch import nn


@dataclass(frozen=True)
class ReportEntry:
    """One parameter: where it is, what it is, and what it got.

    ``rule`` describes the write (``normal(std=0.0625)``); ``distribution`` is the kind of write
    (``normal``, ``uniform``, ``truncated_normal``, ``orthogonal``, ``constant``; ``keep`` when the scheme
    leaves the constructed value on purpose, as a layer scale; None for copies and skips); ``std`` is the
    element std it targets (None for orthogonal and skipped entries); ``skipped`` holds the reason a
    parameter was left as is.

    The draw itself, enough to recompute every value: after ``reinit(..., seed=s)``,
    ``torchinit.keyed_(t, e.distribution, e.param, cut=e.cut, chunks=e.chunks, seed=s, name=e.path)``
    then row ``zero_row`` set to 0. ``param`` is what the draw takes (the std of normal and
    truncated_normal, the bound of uniform, the gain of orthogonal, the value of constant); ``cut`` the
    truncation in underlying sigmas (truncated_normal only, else None); ``chunks`` the dim-0 blocks an
    orthogonal draw factorizes one by one (packed RNN gates); ``chunk_values`` one constant per dim-0
    block instead of ``param`` (an LSTM's forget-gate bias); ``zero_row`` a row set to 0 after the draw
    (an embedding's padding index).
    LSUV rescales after the draw: its entries say so in ``rule`` and ``std``, and ``param`` is the draw's.
    """

    path: str
    shape: tuple[int, ...]
    role: str | None
    rule: str
    distribution: str | None = None
    fans: Fans | None = None
    std: float | None = None
    aliases: tuple[str, ...] = ()
    skipped: str | None = None
    source: str = ""
    """Where the rule comes from: ``variance scaling``, ``kaiming_uniform_(a=sqrt(5))`` (legacy), an override."""
    param: float | None = None
    cut: float | None = None
    chunks: int = 1
    chunk_values: tuple[float, ...] | None = None
    zero_row: int | None = None

    def record(self) -> dict[str, Any]:
        """A plain dict (fans as a dict) for JSON or a DataFrame."""
        out = asdict(self)
        out["shape"] = list(self.shape)
        out["aliases"] = list(self.aliases)
        out["chunk_values"] = None if self.chunk_values is None else list(self.chunk_values)
        return out


class InitReport:
    """The result of `torchinit.reinit`: one entry per parameter, in the order they were written.

    ``str(report)`` is a readable table; `records` and `to_dict` are machine-readable;
    ``report["layer.0.weight"]`` finds one entry (tied aliases included); :attr:`skipped` lists what
    was left untouched and why; `param_groups` gives an optimizer the learning rates the scheme asks for
    (muP's per parameter under `torchinit.recipes.mup`).
    """

    def __init__(
        self,
        scheme: str,
        entries: list[ReportEntry] | Callable[[], list[ReportEntry]],
        buffers: list[str],
        drawn: int = 0,
        *,
        model: nn.Module | None = None,
        widths: dict[str, Width] | None = None,
    ) -> None:
        self.scheme = scheme
        self.drawn = drawn
        """Random elements this process generated (keyed shards count only the chunks they drew)."""
        self.buffers = buffers
        self.widths: dict[str, Width] = dict(widths or {})
        """Under `torchinit.recipes.mup`: each parameter path's width multipliers against the base model (its
        fans, or its width dimension, over the base's); empty for other schemes."""
        self._model = ModelRef(model)  # weakly: a report does not keep a deleted model alive
        self.lsuv: list[Any] = []
        """For ``"lsuv"``: per layer in forward order, the output std reached and the rescalings used."""
        self._entries = entries  # built on first use: reinit itself never pays for the report

    @functools.cached_property
    def entries(self) -> list[ReportEntry]:
        """One entry per parameter, in the order they were written."""
        return self._entries() if callable(self._entries) else self._entries

    @functools.cached_property
    def _index(self) -> dict[str, ReportEntry]:
        return {alias: e for e in self.entries for alias in (e.path, *e.aliases)}

    def revise(self, path: str, **changes: Any) -> ReportEntry | None:
        """Replace the entry of ``path`` (any alias) by a copy with ``changes`` (a scheme's `finish` pass
        records what it did this way); None when the report has no such parameter."""
        entry = self._index.get(path)
        if entry is None:
            return None
        revised = dataclasses.replace(entry, **changes)
        self.entries[self.entries.index(entry)] = revised
        for alias in (entry.path, *entry.aliases):
            self._index[alias] = revised
        return revised

    def __iter__(self) -> Iterator[ReportEntry]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, path: object) -> bool:
        return path in self._index

    def get(self, path: str) -> ReportEntry | None:
        """The entry of ``path`` (any alias), or None."""
        return self._index.get(path)

    def __getitem__(self, path: str) -> ReportEntry:
        try:
            return self._index[path]
        except KeyError:
            raise KeyError(f"no parameter {path!r} in this report") from None

    @property
    def skipped(self) -> list[ReportEntry]:
        """Entries left untouched (uncovered parameters, skip overrides), with reasons."""
        return [e for e in self.entries if e.skipped is not None]

    def param_groups(self, lr: float, optimizer: str = "adam") -> list[dict[str, Any]]:
        r"""Parameter groups for ``torch.optim.Adam(groups)`` (or ``AdamW``, ``SGD``): every parameter of the
        model exactly once (a tied one once), each group with its ``lr``.

        Under `torchinit.recipes.mup`, muP's learning rates per parameter (Yang et al. 2021, Table 3; what the
        ``mup`` package's ``MuAdam`` and ``MuSGD`` give), with $m_\mathrm{in}$ and $m_\mathrm{out}$ a
        parameter's fans over the base's (`widths`): for ``"adam"`` and ``"adamw"``
        $\mathrm{lr}/m_\mathrm{in}$ (hidden and readout weights $\mathrm{lr}\cdot\mathrm{base\_fan\_in}/
        \mathrm{fan\_in}$, whatever the readout's init; input weights, embeddings, biases and norms lr); for
        ``"sgd"`` $\mathrm{lr}\cdot m_\mathrm{out}/m_\mathrm{in}$ (input weights, embeddings and vectors of the
        width $\mathrm{lr}\cdot m$; the readout $\mathrm{lr}/m_\mathrm{in}$). Only ``lr`` is set: a
        ``weight_decay`` given to the optimizer applies to every group unscaled (``mup``'s ``MuAdam`` also
        multiplies a coupled decay by $m_\mathrm{in}$). Under any other scheme: one group of every parameter.

        Args:
            lr: the learning rate at the base width (a finite number >= 0).
            optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"``.

        Raises:
            InitError: a bad ``lr`` or ``optimizer``; the model is gone (the report refers to it weakly); a
                parameter the plan did not see (added after reinit).

        Example:
            >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
            >>> (group,) = torchinit.reinit(model).param_groups(1e-3)  # one group: not a muP scheme
            >>> len(group["params"]), group["lr"]
            (4, 0.001)
        """
        return param_groups(self._model.get(), self.widths, lr, optimizer)

    def records(self) -> list[dict[str, Any]]:
        """One dict per parameter."""
        return [e.record() for e in self.entries]

    def to_dict(self) -> dict[str, Any]:
        """The whole report: scheme, parameter records, reset buffers."""
        return {"scheme": self.scheme, "parameters": self.records(), "buffers": list(self.buffers)}

    def __repr__(self) -> str:
        return f"<InitReport scheme={self.scheme} parameters={len(self.entries)} skipped={len(self.skipped)}>"

    def __str__(self) -> str:
        rows = [("parameter", "shape", "role", "fans (in, out)", "rule", "std", "from")]
        for e in self.entries:
            fans = "" if e.fans is None else f"{e.fans.fan_in:g}, {e.fans.fan_out:g}"
            if e.fans is not None and e.fans.chunks > 1:
                fans += f" x{e.fans.chunks}"
            std = "" if e.std is None else f"{e.std:.4g}"
            path = e.path + (f" (= {', '.join(e.aliases)})" if e.aliases else "")
            rule = e.rule if e.skipped is None else f"SKIPPED: {e.skipped}"
            rows.append((path, "x".join(map(str, e.shape)) or "()", e.role or "-", fans, rule, std, e.source))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"reinit with {self.scheme}: {len(self.entries)} parameters, {len(self.skipped)} skipped"]
        for i, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            if i == 0:
                lines.append("  ".join("-" * w for w in widths))
        if self.buffers:
            lines.append(f"buffers reset: {', '.join(self.buffers)}")
        for layer in self.lsuv:
            state = "ok" if layer.converged else "NOT within tolerance"
            line = f"lsuv {layer.path}: output std {layer.std:.4f} after {layer.iterations} rescalings ({state})"
            line += f", weight x{layer.scale:.4g}"
            if layer.calls > 1:
                line += f"; called {layer.calls} times, solved on the first call"
            if layer.shared_with:
                line += f"; tied, also used by {', '.join(layer.shared_with)} (solved here once)"
            lines.append(line)
        return "\n".join(lines)
