"""Command line: ``python -m torchinit demo [--json] [--depth N] [--seed S]``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the chosen command."""
    parser = argparse.ArgumentParser(prog="torchinit", description="Correct weight initialization for PyTorch.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="activation std through deep ReLU stacks, torch default vs torchinit")
    demo.add_argument("--json", action="store_true", help="print the numbers as JSON")
    demo.add_argument("--depth", type=int, default=50, help="layers in the MLP (default 50)")
    demo.add_argument("--seed", type=int, default=0, help="seed for weights and input (default 0)")
    args = parser.parse_args(argv)
    if args.depth < 1:
        parser.error(f"--depth must be at least 1; got --depth={args.depth}")
    from torchinit import _demo

    _demo.main(args.json, args.depth, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
