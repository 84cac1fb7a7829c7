"""Every ```python block of README.md and docs/**/*.md runs: an example that raises or misleads fails here.

One test per block, id ``file:line`` (the line of the opening fence). The blocks of one page run in order in one
namespace (a later block uses an earlier one's names), which starts with ``torch``, ``nn`` (``torch.nn``) and
``torchinit`` imported, as the docs assume; each block runs with ``torch.manual_seed(0)`` in a fresh temporary
folder of its page, with every warning recorded: one that the page does not declare fails the block, and so does
a declared one that never comes. Running one block alone runs the earlier blocks of its page first.

The markup is HTML comments, invisible on GitHub and in the built docs. Before a block (blank lines between
allowed):

- ``<!-- test: replace OLD => NEW -->``: run the block with OLD replaced by NEW (OLD must occur): a tiny config
  for a big model, ``cpu`` for ``cuda``;
- ``<!-- test: warns CATEGORY -->``: the block emits this warning (the text says so);
- ``<!-- test: needs MODULE -->``: skipped unless MODULE imports (torchvision, timm);
- ``<!-- test: skip REASON -->``: not run, for a reason stated there;
- ``<!-- test-setup`` + code + ``-->``: hidden code run first in the page's namespace (the model a fragment
  takes as given, built small).

After a block: ``<!-- test-check`` + code + ``-->``, hidden assertions of what the text claims about it. An
unlabelled fence right after a python block is its printed output, compared line by line.

There are no ``pycon``/``>>>`` blocks in the docs (the docstrings' examples are doctested by
``--doctest-modules``); a block in any other language than python, bash, text or plain fails collection, so a
new ``pycon`` block cannot go unexecuted silently.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import re
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

import torchinit
from torchinit._layers import rules as _layers
from torchinit._schemes import registry as _registry

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
NOT_RUN = {"bash", "text", ""}  # shell commands, diagrams and printed output
FENCE = re.compile(r"^```\s*(\S*)\s*$")
DIRECTIVE = re.compile(r"^<!-- test: (replace|warns|needs|skip) (.+?) -->$")


@dataclass
class Block:
    page: Path
    line: int  # of the opening fence, 1-based
    code: str
    index: int = 0  # among the page's python blocks
    setup: str = ""
    setup_line: int = 0
    check: str = ""
    check_line: int = 0
    replace: list[tuple[str, str]] = field(default_factory=list)
    warns: list[str] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    skip: str = ""
    output: list[str] | None = None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT).as_posix()}:{self.line}"


def _comment(lines: list[str], start: int) -> tuple[str, int]:
    """The HTML comment opening at ``lines[start]``: its text and the index of its last line."""
    end = start
    while "-->" not in lines[end]:
        end += 1
    return "\n".join(lines[start : end + 1]), end


def parse(page: Path) -> list[Block]:
    """The python blocks of one page with the markup attached to them."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    pending: list[tuple[str, int]] = []  # comments waiting for the next fence, with their last line
    last: Block | None = None  # the python block just closed, while only blank lines follow it
    i = 0
    while i < len(lines):
        line = lines[i]
        where = f"{page.relative_to(ROOT)}:{i + 1}"
        if line.startswith("<!-- test"):
            text, i = _comment(lines, i)
            if text.startswith("<!-- test-check"):
                if last is None:
                    raise ValueError(f"{where}: test-check must follow a python block")
                last.check, last.check_line = text.removeprefix("<!-- test-check").removesuffix("-->"), i
            else:
                pending.append((text, i))
        elif match := FENCE.match(line):
            lang, start = match.group(1), i
            i += 1
            while not lines[i].startswith("```"):
                i += 1
            body = lines[start + 1 : i]
            if lang == "python":
                block = Block(page, start + 1, "\n".join(body), index=len(blocks))
                for text, end in pending:
                    _attach(block, text, end, where)
                blocks.append(block)
                last, pending = block, []
                i += 1
                continue
            if lang not in NOT_RUN:
                raise ValueError(f"{where}: ```{lang} block: make it python (run here) or bash/text (not run)")
            if pending:
                raise ValueError(f"{where}: test markup before a ```{lang} block, which never runs")
            if lang == "" and last is not None:
                last.output = [row.rstrip() for row in body]
        elif line.strip():
            if pending:
                raise ValueError(f"{where}: test markup must come right before a python block")
            last = None
        i += 1
    if pending:
        raise ValueError(f"{page.relative_to(ROOT)}: test markup after the last block")
    return blocks


def _attach(block: Block, text: str, end: int, where: str) -> None:
    if text.startswith("<!-- test-setup"):
        block.setup, block.setup_line = text.removeprefix("<!-- test-setup").removesuffix("-->"), end
        return
    match = DIRECTIVE.match(text)
    if match is None:
        raise ValueError(f"{where}: unknown test markup {text!r}")
    key, value = match.groups()
    if key == "replace":
        old, sep, new = value.partition(" => ")
        if not sep:
            raise ValueError(f"{where}: replace needs 'OLD => NEW'")
        block.replace.append((old, new))
    elif key == "warns":
        block.warns.append(value)
    elif key == "needs":
        block.needs.extend(name.strip() for name in value.split(","))
    else:
        block.skip = value


BLOCKS = [block for page in PAGES for block in parse(page)]


def _source(block: Block) -> str:
    code = block.code
    for old, new in block.replace:
        assert old in code, f"{block.id}: 'replace: {old} => ...' does not occur in the block"
        code = code.replace(old, new)
    return code


class PageRun:
    """One page's namespace, working folder and registrations, carried from block to block."""

    def __init__(self, folder: Path) -> None:
        self.namespace: dict[str, Any] = {"__name__": "__docs__"}
        exec("import torch\nfrom torch import nn\nimport torchinit", self.namespace)
        self.folder = folder
        self.done = 0
        self.failed = ""
        self.layers = _layers.registered()
        self.schemes = {name: torchinit.extend.get_scheme(name) for name in torchinit.list_schemes()}

    def enter(self) -> None:
        """Put back the page's registrations (the suite's fixture restores the global ones after each test)."""
        _layers.restore(self.layers)
        for name in torchinit.list_schemes():
            if name not in self.schemes:
                _registry.unregister_scheme(name)
        for name, scheme in self.schemes.items():
            torchinit.extend.register_scheme(name, scheme, overwrite=True)

    def _exec(self, code: str, block: Block, first_line: int) -> None:
        # Padded so that a traceback names the page's own line.
        exec(compile("\n" * first_line + textwrap.dedent(code), str(block.page), "exec"), self.namespace)

    def run(self, block: Block) -> str:
        """Run one block (its setup, the code, its check); return what it printed."""
        torch.manual_seed(0)
        out = io.StringIO()
        cwd = Path.cwd()
        os.chdir(self.folder)
        try:
            with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out):
                warnings.simplefilter("always")
                warnings.filterwarnings("ignore", "Failed to initialize NumPy", UserWarning)
                self._exec(block.setup, block, block.setup_line - block.setup.count("\n"))
                self._exec(_source(block), block, block.line)
                printed = out.getvalue()
                self._exec(block.check, block, block.check_line - block.check.count("\n"))
        finally:
            os.chdir(cwd)
            self.done = block.index + 1
            self.layers = _layers.registered()
            self.schemes = {name: torchinit.extend.get_scheme(name) for name in torchinit.list_schemes()}
        print(out.getvalue(), end="")
        declared = [self._category(name, block) for name in block.warns]
        unexpected = [w for w in caught if not any(issubclass(w.category, c) for c in declared)]
        assert not unexpected, f"{block.id}: undeclared warning(s): " + "; ".join(
            f"{w.category.__name__}: {w.message} ({w.filename}:{w.lineno})" for w in unexpected
        )
        for category in declared:
            assert any(issubclass(w.category, category) for w in caught), f"{block.id}: no {category.__name__}"
        return printed

    def _category(self, name: str, block: Block) -> type[Warning]:
        found = self.namespace.get(name) or getattr(builtins, name, None) or getattr(torchinit, name, None)
        assert isinstance(found, type) and issubclass(found, Warning), f"{block.id}: unknown warning {name}"
        return found


_RUNS: dict[Path, PageRun] = {}


def _importable(name: str) -> bool:
    try:
        __import__(name)
    except ImportError:
        return False
    return True


def _runnable(block: Block) -> bool:
    return not block.skip and all(_importable(name) for name in block.needs)


@pytest.mark.parametrize("block", BLOCKS, ids=[block.id for block in BLOCKS])
def test_doc_block(block: Block, tmp_path_factory: pytest.TempPathFactory) -> None:
    if block.skip:
        pytest.skip(f"{block.id}: {block.skip}")
    for name in block.needs:
        if not _importable(name):
            pytest.skip(f"{block.id} needs {name}")
    run = _RUNS.get(block.page)
    if run is None or run.done > block.index:
        run = _RUNS[block.page] = PageRun(tmp_path_factory.mktemp("docs"))
    run.enter()
    page_blocks = [b for b in BLOCKS if b.page == block.page]
    for earlier in page_blocks[run.done : block.index]:
        if run.failed:
            break
        if _runnable(earlier):
            try:
                run.run(earlier)
            except Exception as error:  # reported as the reason to skip this block
                run.failed = f"{earlier.id} ({type(error).__name__})"
    if run.failed:
        pytest.skip(f"an earlier block of this page failed: {run.failed}")
    try:
        printed = run.run(block)
    except Exception:
        run.failed = block.id
        raise
    if block.output is not None:
        got = [row.rstrip() for row in printed.rstrip("\n").splitlines()]
        expected = block.output
        assert got == expected, (
            f"{block.id} printed\n" + "\n".join(got) + "\nbut the page shows\n" + "\n".join(expected)
        )


def test_every_page_is_collected() -> None:
    """The collector sees the pages' python blocks (a parser that finds none would pass everything)."""
    fences = sum(page.read_text(encoding="utf-8").count("```python") for page in PAGES)
    assert len(BLOCKS) == fences > 20
