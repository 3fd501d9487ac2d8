"""The ``longseq`` command: ``longseq info``, ``longseq demo`` and ``longseq data list|verify|download``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level argument parser with every subcommand registered."""
    from longseq.core import demo, info
    from longseq.core.data import cli as data_cli

    parser = argparse.ArgumentParser(prog="longseq", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info.add_parser(sub)
    demo.add_parser(sub)
    data_cli.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``longseq`` console script; returns the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `longseq data list | head`: the reader left; not an error
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
