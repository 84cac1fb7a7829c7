"""Residual branches, found by running the model once: which layer's output is added back into its own input.

A residual block computes ``x + f(x)``: the stream ``x`` is an ancestor of the branch output ``f(x)``. One
forward pass of a small input is traced (a ``TorchFunctionMode`` records which tensors every torch operation
made from which; forward hooks mark the outputs of layers that own parameters). At every addition of two
tensors of the result's shape, the branch is the operand the other one is an ancestor of; when neither is (a
projection shortcut, ``bn3(conv3(..)) + downsample(x)``), the operands' nearest common ancestor is found and the
branch is the operand that passes more layers from it. From the branch operand, the trace is followed back
through operations with one non-parameter tensor input (dropout, scaling by a layer-scale vector) to the layer
that made it: the branch's output layer (GPT-2's ``c_proj``, Llama's ``o_proj`` and ``down_proj``, BERT's
``output.dense``, a ResNet's ``bn3``). No names are read.

The pass runs in eval mode, without autograd, with torch's RNG forked and every buffer put back, on a copy of
the input: the model is left as it was.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from torchinit._maths.draw import Action
from torchinit._model.write import Step
from torchinit._types import LAZY, InitError

RESIDUAL_RULES = (None, "1/sqrt(2L)", "depth_init", "zero")
"""What ``Scheme(residual=...)`` takes besides a float factor."""

_ADDS = frozenset({
    torch.add, torch.Tensor.add, torch.Tensor.add_, torch.Tensor.__add__, torch.Tensor.__radd__,
    torch.Tensor.__iadd__,
})  # fmt: skip


@dataclass(frozen=True)
class Branch:
    """A residual branch: the layer whose output is added back (its path), the block it sits in (the order of
    its first branch in the forward pass, from 0), and the parameter that sets the branch's output scale (the
    layer's ``weight``; a ``MultiheadAttention``'s ``out_proj.weight``), None if it has none."""

    layer: str
    block: int
    weight: str | None = None


class _Trace(TorchFunctionMode):
    """Records, for every tensor a torch operation makes, the tensors it was made from."""

    def __init__(self, params: set[int]) -> None:
        super().__init__()
        self.params = params  # ids of the model's parameters: never a stream or a branch
        self.parents: dict[int, list[int]] = {}  # node -> parent nodes
        self.layer: dict[int, str] = {}  # node -> the layer that output it
        self.node: dict[int, int] = {}  # id(tensor) -> its latest node
        self.alive: list[torch.Tensor] = []  # keeps traced tensors alive, so ids are not reused
        self.adds: list[tuple[int, int]] = []  # the operand nodes of each addition that may be a residual one
        self.count = 0

    def node_of(self, t: torch.Tensor) -> int | None:
        if id(t) in self.params:
            return None
        found = self.node.get(id(t))
        if found is None:  # an input or a buffer: a root
            found = self._new(t, [])
        return found

    def _new(self, t: torch.Tensor, parents: list[int]) -> int:
        self.count += 1
        self.parents[self.count] = parents
        self.node[id(t)] = self.count
        self.alive.append(t)
        return self.count

    def __torch_function__(self, func: Callable[..., Any], types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        inputs = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        parents = [n for n in (self.node_of(t) for t in inputs) if n is not None]
        out = func(*args, **kwargs)
        outputs = [t for t in pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
        for t in outputs:
            self._new(t, parents)
        # an addition of two traced tensors (no parameter: those have no node) of the result's shape
        added = func in _ADDS and len(inputs) == len(parents) == 2 and len(outputs) == 1
        if added and inputs[0].shape == inputs[1].shape == outputs[0].shape:
            self.adds.append((parents[0], parents[1]))
        return out


def _ancestors(trace: _Trace, start: int) -> dict[int, int]:
    """Every ancestor of node ``start`` (itself included) with the number of layer outputs on the way to it."""
    found = {start: 0}
    todo = [start]
    while todo:
        node = todo.pop()
        depth = found[node] + (1 if node in trace.layer else 0)
        for parent in trace.parents.get(node, ()):
            if parent not in found or found[parent] > depth:
                found[parent] = depth
                todo.append(parent)
    return found


def _output_layer(trace: _Trace, node: int) -> str | None:
    """The layer that made the branch operand ``node``: back through operations with one traced input."""
    for _ in range(64):
        if node in trace.layer:
            return trace.layer[node]
        parents = trace.parents.get(node, [])
        if len(parents) != 1:
            return None
        node = parents[0]
    return None


def _branch(trace: _Trace, a: int, b: int) -> int | None:
    """Which operand of ``a + b`` is the branch (the other is its stream), or None if neither is."""
    from_a, from_b = _ancestors(trace, a), _ancestors(trace, b)
    if a in from_b and b not in from_a:  # x + f(x): f must pass a layer (not GELU's x + 0.044715 x^3)
        return b if from_b[a] else None
    if b in from_a and a not in from_b:
        return a if from_a[b] else None
    common = set(from_a) & set(from_b)
    if not common:
        return None
    nearest = min(common, key=lambda n: from_a[n] + from_b[n])
    layers_a, layers_b = from_a[nearest], from_b[nearest]
    if layers_a == layers_b:
        return None
    return a if layers_a > layers_b else b  # a projection shortcut passes fewer layers than the branch


def residual_branches(model: nn.Module, inputs: Any) -> list[Branch]:
    """The residual branches of ``model`` in forward order, found by one pass of ``inputs`` (a tensor, a tuple
    of positional arguments, or a dict of keyword arguments): for each ``x + f(x)``, the layer that makes
    ``f(x)``, its block and the weight that sets the branch's scale. What ``Scheme(residual=...)`` scales.

    The model, its buffers and torch's RNG are left as they were (the pass runs in eval mode, without
    autograd, on a copy of ``inputs``).

    Raises:
        InitError: the forward pass raised (the error says what to pass).

    Example:
        >>> class Residual(nn.Module):
        ...     def __init__(self) -> None:
        ...         super().__init__()
        ...         self.norm, self.proj = nn.LayerNorm(8), nn.Linear(8, 8)
        ...     def forward(self, x):
        ...         return x + self.proj(self.norm(x))
        >>> print(*(b.weight for b in residual_branches(Residual(), torch.randn(2, 8))))
        proj.weight
    """
    lazy = next((path for path, p in model.named_parameters() if isinstance(p, LAZY)), None)
    if lazy is not None:  # the pass would materialize it (shaped by the probe input): the model would change
        raise InitError(f"{lazy} is an uninitialized lazy parameter: run one forward pass of a real batch first.")
    params = {id(p) for p in model.parameters()}
    trace = _Trace(params)
    names = {id(m): path for path, m in model.named_modules() if any(True for _ in m.parameters(recurse=False))}

    def mark(module: nn.Module, args: Any, output: Any) -> None:
        for t in pytree.tree_leaves(output):
            if isinstance(t, torch.Tensor) and id(t) in trace.node:
                trace.layer[trace.node[id(t)]] = names[id(module)]

    hooks = [m.register_forward_hook(mark) for m in model.modules() if id(m) in names]
    buffers = {id(b): (b, b.detach().clone()) for b in model.buffers()}
    modes = [(m, m.training) for m in model.modules()]
    args, kwargs = _arguments(copy.deepcopy(inputs))
    try:
        model.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad(), trace:
            model(*args, **kwargs)
    except Exception as error:
        raise InitError(
            f"finding the residual branches runs the model once, and it raised {type(error).__name__}: {error}. "
            "Pass data= (one small batch the model takes, as a tensor, a tuple or a dict of keyword arguments)."
        ) from error
    finally:
        for hook in hooks:
            hook.remove()
        for m, mode in modes:
            m.training = mode
        with torch.no_grad():
            for buffer, saved in buffers.values():
                buffer.copy_(saved)
    found: dict[str, None] = {}
    for first, second in trace.adds:
        branch = _branch(trace, first, second)
        layer = _output_layer(trace, branch) if branch is not None else None
        if layer is not None:
            found.setdefault(layer)
    owners = dict(model.named_modules())
    return [replace(b, weight=_output_weight(owners[b.layer], b.layer)) for b in _numbered(found)]


def _output_weight(layer: nn.Module, path: str) -> str | None:
    if isinstance(layer, nn.MultiheadAttention):  # its forward reads out_proj.weight without calling out_proj
        return f"{path}.out_proj.weight"
    return f"{path}.weight" if isinstance(layer._parameters.get("weight"), torch.Tensor) else None


def _numbered(layers: Iterable[str]) -> list[Branch]:
    """Branches with their block: the path up to its first integer segment names a block (``h.3``,
    ``layer2.0``, ``encoder.block.1``), else the layer's parent; blocks are numbered in the order their first
    branch ran."""
    blocks: dict[str, int] = {}
    out = []
    for layer in layers:
        parts = layer.split(".")
        cut = next((i for i, p in enumerate(parts) if p.isdigit()), len(parts) - 2)
        block = ".".join(parts[: cut + 1])
        out.append(Branch(layer, blocks.setdefault(block, len(blocks))))
    return out


def _arguments(inputs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(inputs, dict):
        return (), dict(inputs)
    if isinstance(inputs, tuple):
        return inputs, {}
    return (inputs,), {}


def example_input(model: nn.Module) -> Any:
    """A small input the model probably takes: a Hugging Face model's ``dummy_inputs``, else one made for its
    first layer (token ids for an Embedding, features for a Linear, a 32x32 image for a Conv2d)."""
    dummy = getattr(model, "dummy_inputs", None)
    if isinstance(dummy, dict) and dummy:
        return {k: v for k, v in dummy.items() if isinstance(v, torch.Tensor)}
    generator = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.Embedding):
            return torch.randint(0, m.num_embeddings, (2, 8), generator=generator)
        if isinstance(m, nn.Linear):
            return torch.randn(2, m.in_features, generator=generator)
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return torch.randn(2, m.in_channels, *([32] * (m.weight.dim() - 2)), generator=generator)
    raise InitError(
        f"finding the residual branches of a {type(model).__name__} runs it once, and no small input could be "
        "made for it: pass data= (one small batch)."
    )


def residual_factor(rule: str | float, branch: Branch, blocks: int) -> tuple[float, str]:
    """The factor on the output layer of ``branch`` (of ``blocks`` blocks) under ``rule``, and why."""
    if rule == "1/sqrt(2L)":
        return 1.0 / math.sqrt(2 * blocks), f"1/sqrt(2L), L = {blocks} blocks"
    if rule == "depth_init":
        return 1.0 / math.sqrt(2 * (branch.block + 1)), f"depth_init 1/sqrt(2(l + 1)), block l = {branch.block}"
    if rule == "zero":
        return 0.0, "zero"
    return float(rule), "factor"


def scale_residuals(steps: Sequence[Step], branches: Sequence[Branch], rule: str | float) -> None:
    """Multiply the write of each branch's output layer weight by its factor (`residual_factor`); the step's
    formula says it is a residual output and why. Kept and skipped weights stay so."""
    blocks = len({b.block for b in branches})
    missing = [b.layer for b in branches if b.weight is None]
    if missing:
        raise InitError(
            f"residual={rule!r}: the residual branch ending in {missing[0]} has no weight to scale; pass "
            "residual=None and scale it with an Override(path=...), or describe the layer with register_layer."
        )
    by_path = {b.weight: b for b in branches}
    for step in steps:
        branch = next((by_path[p] for p in (step.target.path, *step.aliases) if p in by_path), None)
        if branch is None or step.action.kind in ("keep", "skip", "copy"):
            continue
        factor, why = residual_factor(rule, branch, blocks)
        step.action = _scaled(step.action, factor, f"residual output of {branch.layer} ({why}): x{factor:.4g}")


def _scaled(action: Action, factor: float, note: str) -> Action:
    formula = f"{action.formula}; {note}" if action.formula else note
    if factor == 0.0:
        return Action("constant", 0.0, fans=action.fans, formula=formula)
    values = tuple(v * factor for v in action.chunk_values) if action.chunk_values is not None else None
    return replace(action, param=action.param * factor, chunk_values=values, formula=formula)
