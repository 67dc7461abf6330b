"""The `dsmar` command: one sub-command per module in `dsmar.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dsmar import __version__
from dsmar.commands.exit_codes import error_code
from kernel.errors import DsmarError

# Each module defines `add_parser(subparsers)` which sets `func(args) -> int` as the handler.
COMMANDS = ("demo", "run", "search", "deploy", "backfill", "bench", "train")
REDELIVERY_S = 0.05  # a signal caught inside a finalizer is sent again this much later


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


def _inside_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def _unwind(signum: int, frame) -> None:
    """Raise `KeyboardInterrupt` (SIGINT) or `Terminated` (SIGTERM) where the program is.

    Python swallows an exception raised inside a finalizer (`__del__`: a dropped Dask future releasing its
    key, many times a second in a tile run), and the program would run on as if never signalled. A signal
    that lands in one is sent to the main thread again a moment later, where it unwinds."""
    if _inside_finalizer(frame):
        main = threading.main_thread().ident
        resend = threading.Timer(REDELIVERY_S, signal.pthread_kill, (main, signum))
        resend.daemon = True
        resend.start()
        return
    raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt


@contextmanager
def _signals_unwind() -> Iterator[None]:
    """SIGINT and SIGTERM unwind the block through `_unwind` (main thread only: elsewhere signals cannot be set).

    A signal ignored when dsmar started stays ignored: a shell script's background job (`dsmar train ... &`)
    is meant to outlive a Ctrl-C of the script."""
    try:
        watched = [s for s in (signal.SIGINT, signal.SIGTERM) if signal.getsignal(s) is not signal.SIG_IGN]
        previous = {signum: signal.signal(signum, _unwind) for signum in watched}
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with _signals_unwind():
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
