"""Command line: ``torchinit demo | audit TARGET | schemes`` (also ``python -m torchinit``)."""

from __future__ import annotations

import argparse
import json
import sys

from torchinit._types import InitError


def _schemes_text() -> str:
    from torchinit._registry import get_scheme, list_schemes

    lines = [f"{name:<22}{get_scheme(name).summary()}" for name in list_schemes()]
    lines.append("\nAll use true fans; recurrent weights orthogonal per gate; norms 1/0; embeddings N(0, 1).")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (2 for a usage or input problem)."""
    parser = argparse.ArgumentParser(prog="torchinit", description="Correct weight initialization for PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="activation std through deep ReLU stacks under four schemes")
    demo.add_argument("--json", action="store_true", help="print the numbers as JSON")
    demo.add_argument("--depth", type=int, default=50, help="layers in the MLP (default 50)")
    demo.add_argument("--seed", type=int, default=0, help="seed for weights and input (default 0)")
    demo.add_argument("--plot", metavar="FILE.png", help="also draw the curves (needs torchinit[plot])")
    audit = commands.add_parser("audit", help="inspect a model's init: fans, weight std vs a scheme, activations")
    audit.add_argument("target", metavar="TARGET", help="package.module:factory or path/to/file.py:factory")
    audit.add_argument("--input-shape", metavar="2,3,224,224", help="run one pass on N(0, 1) input of this shape")
    audit.add_argument("--scheme", default="kaiming_relu", help="scheme to compare with (default kaiming_relu)")
    audit.add_argument("--json", action="store_true", help="print the numbers as JSON")
    audit.add_argument("--plot", metavar="FILE.png", help="draw activation/gradient std per layer")
    audit.add_argument("--backward", action=argparse.BooleanOptionalAction, default=True, help="also a backward pass")
    commands.add_parser("schemes", help="list the registered schemes with their formulas")
    args = parser.parse_args(argv)

    from torchinit._audit import AuditError
    from torchinit._plot import PlotUnavailable

    try:
        if args.command == "demo":
            if args.depth < 1:
                parser.error(f"--depth must be at least 1; got --depth={args.depth}")
            from torchinit import _demo

            result = _demo.run(depth=args.depth, seed=args.seed)
            print(json.dumps(result, indent=1) if args.json else _demo.format_table(result))
            if args.plot:
                from torchinit._plot import plot_demo

                plot_demo(result, args.plot)
        elif args.command == "audit":
            from torchinit import _audit

            shape = _audit.parse_shape(args.input_shape) if args.input_shape else None
            if args.plot and shape is None:
                raise AuditError("--plot draws the forward pass: give --input-shape too")
            model = _audit.build_model(args.target)
            report = _audit.audit(model, args.target, args.scheme, shape, args.backward)
            print(json.dumps(report, indent=1) if args.json else _audit.format_audit(report))
            if args.plot:
                from torchinit._plot import plot_audit

                plot_audit(report, args.plot)
        else:
            print(_schemes_text())
    except (AuditError, PlotUnavailable, InitError) as error:
        print(f"torchinit {args.command}: error: {error}", file=sys.stderr)
        return 2
    return 0
