"""The `dsmar` command: one sub-command per module in `dsmar.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dsmar import __version__
from dsmar.commands.exit_codes import error_code
from kernel.errors import DsmarError

# Each module defines `add_parser(subparsers)` which sets `func(args) -> int` as the handler.
COMMANDS = ("demo", "run", "search", "deploy", "backfill", "bench", "train")


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


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so it unwinds like Ctrl-C: context managers close the Dask
    cluster and the local STAC server, and atexit hooks stop Prefect's temporary API (the default
    action would kill only this process and orphan them)."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """SIGTERM raises `Terminated` inside the block (main thread only: elsewhere signals cannot be set)."""
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _sigterm_unwinds():
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # here, where a closed pipe is caught, not at interpreter exit
            return code
    except DsmarError as err:
        print(f"dsmar {args.command}: error: {err}", file=sys.stderr)
        return error_code(err)
    except BrokenPipeError:
        return _closed_pipe()
    except Terminated:
        print(f"dsmar {args.command}: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print(f"dsmar {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def _closed_pipe() -> int:
    """The reader of stdout went away (`dsmar search --json | head -1`): end quietly, as a program killed by
    SIGPIPE would, with nothing left for Python to flush into the closed pipe at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
