"""`dsmar train --config CONFIG`: multi-stage DS-MAR training (see docs/dsmar.md)."""

from models.training.run import add_arguments, train


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("train", help="train DS-MAR from a config (configs/train_small.json: CPU, minutes)")
    add_arguments(parser)
    parser.set_defaults(func=train)
