"""Command line: ``torchinit demo | audit TARGET | schemes`` (also ``python -m torchinit``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from torchinit._types import InitError


def _schemes_text() -> str:
    from torchinit._schemes.registry import get_scheme, list_schemes

    lines = [f"{name:<22}{get_scheme(name).summary()}" for name in list_schemes()]
    lines.append("\nAll use true fans; recurrent weights orthogonal per gate; norms 1/0; embeddings N(0, 1).")
    return "\n".join(lines)


def _writable(path: str, option: str) -> Path:
    """The file ``path`` names, symlinks followed (a dangling one too), after checking it can be written: fail
    before any work when it cannot. The probe leaves nothing behind, at the link or at its target."""
    from torchinit._tools.audit_inputs import AuditError

    target = Path(path).resolve()
    linked = target != Path(path).absolute()
    shown = f"{path} (-> {target})" if linked else path
    folder = target.parent
    if target.is_dir():
        raise AuditError(f"{option} {shown}: is a folder; give a file name")
    if not folder.is_dir():
        named = folder if linked else Path(path).parent
        raise AuditError(f"{option} {shown}: folder {named} does not exist; create it first")
    if not os.access(folder, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise AuditError(f"{option} {shown}: not writable")
    existed = target.exists()
    try:  # the permission bits do not tell everything (root, read-only mounts, /proc): try it
        with open(target, "ab"):
            pass
    except OSError as error:
        raise AuditError(
            f"{option} {shown}: cannot be written ({error.strerror or error}); choose another path"
        ) from error
    if not existed:
        target.unlink()  # nothing left behind if the run fails before writing it
    return target


def _outputs(named: list[tuple[str | None, str]], target: str | None = None) -> dict[str, Path]:
    """Each output option given to the file it will write (resolved, checked writable): refused, before any
    work, when two name one file or one names TARGET's own source file."""
    from torchinit._tools.audit_inputs import AuditError, source_file

    given = [(option, path, Path(path).resolve()) for path, option in named if path]
    source = source_file(target) if target is not None and given else None
    seen: dict[Path, tuple[str, str]] = {}
    for option, path, resolved in given:
        if resolved == source:
            raise AuditError(
                f"{option} {path}: is TARGET's source file {resolved}; writing there would destroy the model's code: "
                "choose another path"
            )
        if resolved in seen:
            other, other_path = seen[resolved]
            raise AuditError(
                f"{other} {other_path} and {option} {path} name the same file ({resolved}); give each its own path"
            )
        seen[resolved] = (option, path)
    return {option: _writable(path, option) for option, path, _ in given}


def _write(path: Path, option: str, data: bytes) -> None:
    """Write an output file; an OS error (disk full, the folder removed meanwhile) is a one-line error."""
    from torchinit._tools.audit_inputs import AuditError

    try:
        path.write_bytes(data)
    except OSError as error:
        raise AuditError(f"{option} {path}: writing it failed ({error.strerror or error})") from error


def _audit_command(args: argparse.Namespace) -> None:
    from torchinit._tools import audit as _audit
    from torchinit._tools import audit_format as _audit_format
    from torchinit._tools import audit_inputs as _audit_inputs

    outputs = _outputs([(args.plot, "--plot"), (args.html, "--html")], args.target)
    if args.plot:
        from torchinit._tools.plot import require_matplotlib

        require_matplotlib()  # before the passes, not after them
    inputs = [_audit_inputs.InputSpec.parse(text) for text in args.input]
    if args.input_shape:
        dtype = _audit_inputs.parse_dtype(args.input_dtype) if args.input_dtype else None
        bounds = _audit_inputs.parse_pair(args.input_range, "--input-range") if args.input_range else None
        inputs.insert(0, _audit_inputs.InputSpec(_audit_inputs.parse_shape(args.input_shape), dtype, bounds))
    elif args.input_dtype or args.input_range:
        raise _audit_inputs.AuditError("--input-dtype and --input-range describe --input-shape's tensor: give it too")
    _audit_inputs.check_seed(args.seed)
    band = _audit_inputs.parse_pair(args.band, "--band")
    if band[0] <= 0:
        raise _audit_inputs.AuditError(f"--band must be two positive numbers LOW,HIGH; got {args.band!r}")
    model = _audit_inputs.build_model(args.target, args.seed)
    report = _audit.audit(
        model, args.target, args.scheme, inputs, args.backward, band=band, seed=args.seed, compare=args.compare,
        progress=args.progress,
    )  # fmt: skip
    print(_audit_format.to_json(report) if args.json else _audit_format.format_audit(report))
    figure: bytes | None = None
    note = ""
    if args.plot or args.html:
        from torchinit._tools.plot import PlotUnavailable, audit_figure

        try:
            figure = audit_figure(report, everything=args.plot_all)
        except PlotUnavailable as error:
            if args.plot:
                raise
            note = f"No figure: {error}."
    if args.plot and figure is not None:
        _write(outputs["--plot"], "--plot", figure)
    if args.html:
        _write(outputs["--html"], "--html", _audit_format.html_report(report, figure, note).encode())


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage or input problem)."""
    parser = argparse.ArgumentParser(prog="torchinit", description="Correct weight initialization for PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="activation std through deep ReLU stacks under four schemes")
    demo.add_argument("--json", action="store_true", help="print the numbers as JSON")
    demo.add_argument("--depth", type=int, default=50, help="layers in the MLP (default 50)")
    demo.add_argument("--seed", type=int, default=0, help="seed for weights and input (default 0)")
    demo.add_argument("--plot", metavar="FILE.png", help="also draw the curves (needs torchinit[plot])")
    audit = commands.add_parser(
        "audit", help="inspect a model's init: fans, weight std vs a scheme (flagged), activations and gradients"
    )
    audit.add_argument("target", metavar="TARGET", help="package.module:factory or path/to/file.py:factory")
    audit.add_argument("--input-shape", metavar="2,3,224,224", help="one pass on a positional input of this shape")
    audit.add_argument(
        "--input-dtype", metavar="DTYPE", help="its dtype (default: the model's; long/int64 etc. draw token ids)"
    )
    audit.add_argument(
        "--input-range", metavar="LOW,HIGH", help="integers in [LOW, HIGH) (default: the input embedding's rows)"
    )
    audit.add_argument(
        "--input", action="append", default=[], metavar="NAME=SHAPE[:DTYPE[:LOW,HIGH]]",
        help="a keyword tensor of model(**inputs), e.g. input_ids=2,64:long (repeatable)",
    )  # fmt: skip
    audit.add_argument("--scheme", default="kaiming_relu", help="scheme to compare with (default kaiming_relu)")
    audit.add_argument("--seed", type=int, default=0, help="seeds the factory, the inputs and the scheme's copy")
    audit.add_argument("--band", default="0.8,1.25", metavar="LOW,HIGH", help="flag weight std ratios outside it")
    audit.add_argument(
        "--json", action="store_true", help='print the numbers as strict JSON (inf and NaN as "Infinity", "NaN")'
    )
    audit.add_argument("--plot", metavar="FILE.png", help="draw weight std ratio and activation std by depth")
    audit.add_argument("--plot-all", action="store_true", help="plot every module's output, not only layers'")
    audit.add_argument("--html", metavar="FILE.html", help="write a self-contained HTML report (tables, figure)")
    audit.add_argument("--backward", action=argparse.BooleanOptionalAction, default=True, help="also a backward pass")
    audit.add_argument(
        "--compare", action=argparse.BooleanOptionalAction, default=True,
        help="also run the pass on a copy initialized by the scheme (default: yes)",
    )  # fmt: skip
    audit.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar (default: on a terminal)"
    )
    commands.add_parser("schemes", help="list the registered schemes with their formulas")
    args = parser.parse_args(argv)

    from torchinit._tools.audit_inputs import AuditError
    from torchinit._tools.plot import PlotUnavailable

    try:
        if args.command == "demo":
            if args.depth < 1:
                parser.error(f"--depth must be at least 1; got --depth={args.depth}")
            from torchinit._tools import demo as _demo
            from torchinit._tools.audit_format import to_json
            from torchinit._tools.audit_inputs import check_seed

            check_seed(args.seed)

            if args.plot:
                from torchinit._tools.plot import require_matplotlib

                plot = _writable(args.plot, "--plot")
                require_matplotlib()
            result = _demo.run(depth=args.depth, seed=args.seed)
            print(to_json(result) if args.json else _demo.format_table(result))
            if args.plot:
                from torchinit._tools.plot import plot_demo

                plot_demo(result, str(plot))
        elif args.command == "audit":
            _audit_command(args)
        else:
            print(_schemes_text())
    except (AuditError, PlotUnavailable, InitError, OSError) as error:
        print(f"torchinit {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
