"""The `dsmar` command: one sub-command per module in `dsmar.commands`."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from dsmar import __version__
from dsmar.errors import DsmarError

# Each module defines `add_parser(subparsers)` which sets `func(args) -> int` as the handler.
COMMANDS = ("demo", "run", "search", "bench", "train")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsmar",
        description="Co-register optical, SAR and DEM archives with DS-MAR and write aligned Zarr cubes.",
    )
    parser.add_argument("--version", action="version", version=f"dsmar {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"dsmar.commands.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except DsmarError as err:
        print(f"dsmar {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dsmar {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
