"""The transaction around a write phase: what is backed up, how SIGINT is held, and how a failure is undone.

`Undo` records the RNG states (torch's CPU and CUDA generators, the call's generator) and, when backups
are on, a copy of each tensor just before the writer changes it; `guarded` restores everything on any
exception (KeyboardInterrupt and MemoryError included); `hold_interrupts` holds a SIGINT while tensors are
written and delivers it afterwards.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn.utils import parametrize

from torchinit._model.walk import spectral_buffers

if TYPE_CHECKING:
    from torchinit._model.walk import Target


class Undo:
    """What a failing write phase puts back: the RNG states always, and every written tensor when asked.

    Backups (``backup=True``) are taken step by step just before each write, on the tensor's own device,
    and cost up to one copy of the written parameters until the call returns. They are taken only where
    a write can still fail after `Plan.check` (a parametrization's code, orthogonal QR temporaries, a
    DTensor write, an LSUV pass); plain in-place draws into validated tensors, keyed ones included (whose
    scratch buffers are allocated before the first write), cannot, so a plan made only of those runs
    without copies.
    """

    def __init__(self, generator: torch.Generator | None, *, backup: bool) -> None:
        self.backup = backup
        self.generator = generator
        self.rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None  # type: ignore[no-untyped-call]
        self.generator_state = generator.get_state() if generator is not None else None
        self.tensors: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.buffers: list[tuple[nn.Module, str, torch.Tensor | None, torch.Tensor | None]] = []  # object, copy
        self.seen: set[int] = set()
        self.cached: list[tuple[int, str]] = []  # parametrized weights whose parametrize.cached() value goes stale

    def save(self, tensor: torch.Tensor) -> None:
        """Back up ``tensor`` (once) if backups are on."""
        if self.backup and id(tensor) not in self.seen:
            self.seen.add(id(tensor))
            self.tensors.append((tensor, tensor.detach().clone()))

    def save_target(self, target: Target) -> None:
        """Back up what a write to ``target`` changes: its tensor, or a parametrization's originals and buffers."""
        if not self.backup:
            return
        if target.parametrized:
            self.cached.append((id(target.owner), target.name))
            plist: nn.Module = target.owner.parametrizations[target.name]  # type: ignore[index, assignment]
            for param in plist.parameters():
                self.save(param)
            for module in plist.modules():
                for name, buffer in module._buffers.items():
                    self.buffers.append((module, name, buffer, None if buffer is None else buffer.detach().clone()))
        else:
            self.save(target.tensor)
        for buffer in spectral_buffers(target):
            self.save(buffer)

    def save_buffers(self, model: nn.Module) -> None:
        """Back up every buffer of ``model`` (a pass that runs the model may change them: observers, caches)."""
        for module in model.modules():
            for buffer in module._buffers.values():
                if buffer is not None:
                    self.save(buffer)

    def restore(self) -> None:
        """Put every backed-up tensor and the RNG states back, newest first."""
        for key in self.cached:
            parametrize._cache.pop(key, None)  # inside parametrize.cached(): the restored value is read afresh
        with torch.no_grad():
            for module, name, buffer, value in reversed(self.buffers):
                if buffer is not None and value is not None:
                    _put_back(buffer, value)
                module._buffers[name] = buffer  # the very object: whoever holds the buffer keeps it
            for tensor, saved in reversed(self.tensors):
                _put_back(tensor, saved)
        torch.set_rng_state(self.rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        if self.generator is not None and self.generator_state is not None:
            self.generator.set_state(self.generator_state)


def _put_back(tensor: torch.Tensor, saved: torch.Tensor) -> None:
    """``tensor``'s values (and, if code replaced its storage, its shape and dtype) as ``saved`` holds them."""
    if tensor.shape == saved.shape and tensor.dtype == saved.dtype:
        tensor.copy_(saved)
    else:  # a right_inverse that replaced the storage
        tensor.set_(saved)  # type: ignore[call-overload]


@contextlib.contextmanager
def hold_interrupts() -> Iterator[None]:
    """Hold a SIGINT (Ctrl-C, ``_thread.interrupt_main()``) that arrives during the block and deliver it to
    whatever handler was installed (Python's default raises KeyboardInterrupt; a handler of your own runs)
    once the block is over. Signals reach Python in the main thread only; elsewhere nothing is held."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: received.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        if previous is signal.default_int_handler:
            raise KeyboardInterrupt
        signal.raise_signal(signal.SIGINT)  # the user's own handler (or SIG_IGN / SIG_DFL) as if it came now


@contextlib.contextmanager
def guarded(undo: Undo) -> Iterator[None]:
    """On any exception in the block (KeyboardInterrupt and MemoryError included), put back everything `undo`
    saved, then raise it."""
    try:
        yield
    except BaseException:
        with hold_interrupts():  # a second Ctrl-C waits for the model to be whole again
            undo.restore()
        raise
