"""`dsmar demo`."""

from dsmar.errors import DsmarError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("demo", help="(under construction)")
    parser.set_defaults(func=_run)


def _run(args) -> int:
    raise DsmarError("`dsmar demo` is under construction")
