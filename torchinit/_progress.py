"""A one-line progress bar on stderr, for passes that take a while (LSUV, the audit's forward/backward)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``label [#####.....] done/total note``, redrawn in place; never past its total.

    Shown only where someone is watching: when the stream is a terminal (``show=None``) and a second has
    passed, or from the first step when ``show=True``; ``show=False`` never draws. Tests and pipes stay quiet.
    """

    def __init__(self, total: int, label: str, *, show: bool | None = None, stream: TextIO | None = None) -> None:
        self.total, self.label, self.done = max(total, 1), label, 0
        self.stream = sys.stderr if stream is None else stream
        isatty = getattr(self.stream, "isatty", None)
        self.enabled = (bool(isatty()) if callable(isatty) else False) if show is None else show
        self.delay = 1.0 if show is None else 0.0
        self.start = time.perf_counter()
        self.shown = False
        self.width = 0

    def step(self, note: str = "") -> None:
        """One more unit done (at most ``total``); redraw if shown."""
        self.done = min(self.done + 1, self.total)
        self._draw(note)

    def _draw(self, note: str) -> None:
        if not self.enabled or not (self.shown or time.perf_counter() - self.start >= self.delay):
            return
        self.shown = True
        filled = int(30 * self.done / self.total)
        bar = f"{self.label} [{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total}"
        line = f"{bar} {note}".rstrip()
        self.stream.write(f"\r{line.ljust(self.width)}")  # padded over a longer line drawn before
        self.width = len(line)
        self.stream.flush()

    def close(self, note: str = "") -> None:
        """End the line (with a last note) if the bar was drawn."""
        if self.shown:
            self._draw(note)
            self.stream.write("\n")
            self.stream.flush()
