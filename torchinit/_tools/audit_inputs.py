"""The audit's inputs: the TARGET factory, seeds, the --input-* options parsed, and the tensors a pass is fed.

Every bad input is an `AuditError`, which the CLI prints on one line (exit status 2).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import os
import random
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn


class AuditError(Exception):
    """A problem with the audit's inputs; the CLI prints it on one line and exits with status 2."""


def _split(target: str) -> tuple[str, str]:
    source, sep, name = target.rpartition(":")
    if not sep or not source or not name.isidentifier():
        raise AuditError(f"TARGET must be 'package.module:factory' or 'path/to/file.py:factory'; got {target!r}")
    return source, name


def cwd_on_path() -> None:
    """The current folder on ``sys.path``, first, as ``python -m`` puts it: so ``pkg.mod:make`` imports from it
    under the ``torchinit`` console script too, whose ``sys.path`` starts with the script's own folder."""
    cwd = os.getcwd()
    if not any(entry in ("", os.curdir, cwd) for entry in sys.path):
        sys.path.insert(0, cwd)


def source_file(target: str) -> Path | None:
    """The file TARGET's module is read from (resolved), without running it; None where it cannot be found
    (`load_factory` then says why)."""
    source, _ = _split(target)
    if source.endswith(".py"):
        return Path(source).resolve()
    cwd_on_path()
    try:
        spec = importlib.util.find_spec(source)  # runs the parent packages' __init__, as the import would
    except Exception:
        return None
    origin = spec.origin if spec is not None and spec.has_location else None
    return Path(origin).resolve() if origin else None


def load_factory(target: str) -> Callable[..., Any]:
    """``package.module:factory`` or ``path/to/file.py:factory`` -> the factory callable.

    A file is imported as a module registered in ``sys.modules`` while it runs (``dataclasses`` and
    ``typing.get_type_hints`` look their module up there), with its folder on ``sys.path``; a module name is
    imported with the current folder on ``sys.path``, as under ``python -m``.
    """
    source, name = _split(target)
    if source.endswith(".py"):
        path = Path(source)
        if not path.is_file():
            raise AuditError(f"no such file: {source} (from TARGET {target!r})")
        module_name = f"_torchinit_audit_{path.stem}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        sys.path.insert(0, str(path.parent.resolve()))
        try:
            spec.loader.exec_module(module)
        except Exception as error:
            sys.modules.pop(module_name, None)
            raise AuditError(f"importing {source} failed: {type(error).__name__}: {error}") from error
        finally:
            sys.path.pop(0)
    else:
        cwd_on_path()
        try:
            module = importlib.import_module(source)
        except Exception as error:
            raise AuditError(f"cannot import {source!r}: {type(error).__name__}: {error}") from error
    factory = getattr(module, name, None)
    if not callable(factory):
        raise AuditError(f"{source} has no callable {name!r}")
    return factory  # type: ignore[no-any-return]


def stream_seed(seed: int, purpose: str) -> int:
    """A seed for one purpose (``"inputs"``, ``"scheme"``), derived from the audit's ``--seed``.

    Each draw needs its own stream: inputs drawn from the very stream a layer's weights came from are
    correlated with them (the first rows of the weight would be the input itself), and the pass would lie.
    """
    return zlib.crc32(f"{seed}:{purpose}".encode())


SEED_RANGE = (-(2**63), 2**64 - 1)
"""The seeds torch's ``manual_seed`` accepts."""


def check_seed(seed: int, option: str = "--seed") -> int:
    """``seed`` if torch can seed with it, else an `AuditError` naming the range."""
    low, high = SEED_RANGE
    if not low <= seed <= high:
        raise AuditError(f"{option} must be an integer from -2**63 to 2**64 - 1 (torch's seed range); got {seed}")
    return seed


def seed_everything(seed: int) -> None:
    """torch's RNGs (CPU and CUDA) and Python's ``random``: what a factory's own init draws from."""
    torch.manual_seed(seed)
    random.seed(seed)


def build_model(target: str, seed: int = 0) -> nn.Module:
    """Call the target's factory (torch's and Python's RNGs seeded first) and check it returned a module."""
    factory = load_factory(target)
    seed_everything(seed)
    try:
        model = factory()
    except Exception as error:
        raise AuditError(f"factory {target} failed: {type(error).__name__}: {error}") from error
    if not isinstance(model, nn.Module):
        raise AuditError(f"factory {target} must return an nn.Module; it returned {type(model).__name__}")
    return model


def parse_shape(text: str, option: str = "--input-shape") -> tuple[int, ...]:
    """``"2,3,224,224"`` -> (2, 3, 224, 224)."""
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or any(s < 1 for s in shape):
        raise AuditError(f"{option} must be positive integers separated by commas, like 2,3,224,224; got {text!r}")
    return shape


def parse_pair(text: str, option: str) -> tuple[float, float]:
    """``"0,1000"`` -> (0.0, 1000.0), low < high."""
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        low = high = math.nan
    if not low < high:
        example = "0.5,2" if option == "--band" else "0,1000"
        raise AuditError(f"{option} must be two numbers LOW,HIGH with LOW < HIGH, like {example}; got {text!r}")
    return low, high


_DTYPES = {
    "float32": torch.float32, "float": torch.float32, "float64": torch.float64, "double": torch.float64,
    "float16": torch.float16, "half": torch.float16, "bfloat16": torch.bfloat16, "int64": torch.int64,
    "long": torch.int64, "int32": torch.int32, "int": torch.int32, "int16": torch.int16, "int8": torch.int8,
    "uint8": torch.uint8, "bool": torch.bool,
}  # fmt: skip


def parse_dtype(text: str, option: str = "--input-dtype") -> torch.dtype:
    """``"long"`` -> torch.int64."""
    if text not in _DTYPES:
        raise AuditError(f"{option} must be one of {', '.join(_DTYPES)}; got {text!r}")
    return _DTYPES[text]


@dataclass(frozen=True)
class InputSpec:
    """One input tensor of the audit's pass: positional (``name`` None) or a keyword of ``model(**inputs)``.

    Floating inputs are N(0, 1) (uniform on ``bounds`` when given), in the model's dtype unless ``dtype``
    says otherwise; integer inputs are uniform integers in ``[low, high)``: by default ``[0, vocabulary)``
    of the model's input embedding, or all ones for a name ending in ``mask``; bool inputs are fair coins.
    """

    shape: tuple[int, ...]
    dtype: torch.dtype | None = None
    bounds: tuple[float, float] | None = None
    name: str | None = None

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        """``NAME=SHAPE[:DTYPE[:LOW,HIGH]]`` (``--input input_ids=2,64:long``)."""
        name, sep, spec = text.partition("=")
        if not sep or not name.isidentifier() or not spec:
            raise AuditError(
                "--input must be NAME=SHAPE[:DTYPE[:LOW,HIGH]], like input_ids=2,64:long or mask=2,64:bool; "
                f"got {text!r}"
            )
        shape, _, rest = spec.partition(":")
        dtype, _, bounds = rest.partition(":")
        return cls(
            parse_shape(shape, f"--input {name}'s SHAPE"),
            parse_dtype(dtype, f"--input {name}'s DTYPE") if dtype else None,
            parse_pair(bounds, f"--input {name}'s LOW,HIGH") if bounds else None,
            name,
        )

    @property
    def option(self) -> str:
        """How the command line spelled this input: ``--input-shape`` or ``--input NAME=...``."""
        return "--input-shape" if self.name is None else f"--input {self.name}=..."

    def placed(self, model: nn.Module) -> tuple[torch.device, torch.dtype]:
        """Where the tensor goes and its dtype: the model's device, ``dtype`` or the model's floating dtype."""
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
        model_float = param.dtype if param is not None and param.is_floating_point() else torch.float32
        return device, self.dtype or model_float

    def check_bounds(self, dtype: torch.dtype) -> None:
        """The value range fits ``dtype``: integers of its range, or finite numbers of a floating dtype."""
        if self.bounds is None or dtype == torch.bool:
            return
        low, high = self.bounds
        given = (
            f"--input-range {low:g},{high:g}"
            if self.name is None
            else f"--input {self.name}'s LOW,HIGH {low:g},{high:g}"
        )
        if dtype.is_floating_point:
            top = torch.finfo(dtype).max
            if not (math.isfinite(low) and math.isfinite(high) and -top <= low and high <= top):
                raise AuditError(f"{given}: a {_name(dtype)} input needs finite bounds within +-{top:g}")
            return
        info = torch.iinfo(dtype)
        top = min(info.max + 1, 2**63 - 1)  # HIGH is exclusive; torch takes int64 bounds
        if not (low.is_integer() and high.is_integer() and info.min <= low and high <= top):
            raise AuditError(
                f"{given}: {_name(dtype)} integers need whole numbers LOW,HIGH with {info.min} <= LOW < HIGH <= {top}"
            )

    def make(self, model: nn.Module, generator: torch.Generator) -> tuple[torch.Tensor, str]:
        """The tensor (on the model's device) and how it was drawn."""
        device, dtype = self.placed(model)
        self.check_bounds(dtype)
        where = "x" if self.name is None else self.name
        size = "x".join(map(str, self.shape))
        if dtype == torch.bool:
            value = torch.randint(0, 2, self.shape, generator=generator).bool()
            law = "fair coins"
        elif dtype.is_floating_point:
            if self.bounds is None:
                value, law = torch.randn(self.shape, generator=generator), "N(0, 1)"
            else:
                low, high = self.bounds
                value, law = torch.rand(self.shape, generator=generator) * (high - low) + low, f"U({low:g}, {high:g})"
        else:
            low, high = self.bounds or self._default_range(model)
            value = torch.randint(int(low), int(high), self.shape, generator=generator)
            law = "ones" if (low, high) == (1, 2) else f"integers in [{int(low)}, {int(high)})"
        return value.to(device=device, dtype=dtype), f"{where}: {law}, {_name(dtype)} {size}"

    def _default_range(self, model: nn.Module) -> tuple[float, float]:
        if self.name is not None and self.name.lower().endswith("mask"):
            return 1, 2
        vocabulary = _vocabulary(model)
        if vocabulary is None:
            which = "--input-range" if self.name is None else f"--input {self.name}=...:DTYPE:LOW,HIGH"
            raise AuditError(
                f"integer input {self.name or 'x'} needs a value range ({which}, e.g. 0,1000): the model has no "
                "nn.Embedding to take the vocabulary size from"
            )
        return 0, vocabulary


def _name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _size(n: float) -> str:
    """A byte count for people: ``32.0 TB``."""
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def memory_limit(device: torch.device) -> int | None:
    """The most bytes an input can take: this machine's RAM (inputs are drawn on the CPU), and the GPU's
    memory for a CUDA model; None where neither can be read."""
    limits = []
    with contextlib.suppress(AttributeError, ValueError, OSError):  # not a POSIX system
        limits.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    if device.type == "cuda":
        limits.append(torch.cuda.get_device_properties(device).total_memory)
    return min(limits) if limits else None


def check_sizes(model: nn.Module, specs: list[InputSpec]) -> None:
    """Refuse, before anything is allocated, inputs that could not fit in memory (a typo'd shape would
    otherwise start drawing terabytes)."""
    total = 0
    for spec in specs:
        device, dtype = spec.placed(model)
        numel = math.prod(spec.shape)
        drawn = 4 if dtype.is_floating_point else 8  # drawn in float32 or int64, then converted
        need = numel * max(dtype.itemsize, drawn)
        total += need
        limit = memory_limit(device)
        shape = ",".join(map(str, spec.shape))
        if numel >= 2**63 or (limit is not None and total > limit):
            room = f"more than the {_size(limit)} of memory here" if limit is not None else "more than torch can index"
            raise AuditError(
                f"{spec.option} {shape}: {numel:,} elements of {_name(dtype)} need {_size(need)}, {room}; "
                "give a smaller shape"
            )


def _vocabulary(model: nn.Module) -> int | None:
    """The input embedding's row count: Hugging Face's ``get_input_embeddings()``, else the first nn.Embedding."""
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    if not isinstance(embedding, nn.Embedding):
        embedding = next((m for m in model.modules() if isinstance(m, nn.Embedding)), None)
    return None if embedding is None else int(embedding.num_embeddings)


def make_inputs(
    model: nn.Module, specs: list[InputSpec], seed: int
) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor], list[str]]:
    """Positional and keyword tensors for ``model(*args, **kwargs)``, from one generator for the ``seed``'s inputs."""
    check_sizes(model, specs)
    generator = torch.Generator().manual_seed(stream_seed(seed, "inputs"))
    args, kwargs, described = [], {}, []
    for spec in specs:
        value, text = spec.make(model, generator)
        if spec.name is None:
            args.append(value)
        else:
            kwargs[spec.name] = value
        described.append(text)
    return tuple(args), kwargs, described
