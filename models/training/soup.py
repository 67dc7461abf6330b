"""A model soup: the uniform average of weights that continue one another, as one weights file.

    python -m models.training.soup OUT.pt models/weights/dsmar.pt runs/dsmar-cpu-20/dsmar.pt [--validate]

Continuations of one set of weights (the same network, trained on from the same start) lie in one basin, and
their average often validates better than each of them (Wortsman et al., "Model soups", 2022): the CPU runs that
continue the shipped weights each move the ledger's median and mean EPE in opposite directions, and their
average with the weights they started from improved both. The soup's record names its ingredients, and with
`--validate` their ledger scores and its own; it keeps the first ingredient's sidecar settings ("inference",
"gpu_throughput"), since the method's settings belong to the network, not to one set of its weights.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from kernel.errors import DsmarError, InputError
from models.dsmar.network import DSMAR
from models.dsmar.weights import load_weights, save_weights

KEPT_SIDECAR_KEYS = ("inference", "gpu_throughput")


def soup(paths: list[Path]) -> tuple[DSMAR, dict]:
    """The uniform average of the weights at `paths` (two or more, one network configuration) and its record."""
    if len(paths) < 2:
        raise InputError("a soup needs two or more weights files")
    loaded = [load_weights(path) for path in paths]
    base, first = loaded[0]
    for (model, _), path in zip(loaded[1:], paths[1:], strict=True):
        if model.config != base.config:
            raise InputError(f"{path} is another network than {paths[0]}: only continuations of one network average")
    states = [model.state_dict() for model, _ in loaded]
    base.load_state_dict(
        {
            name: (sum(state[name].float() for state in states) / len(states)) if tensor.is_floating_point() else tensor
            for name, tensor in base.state_dict().items()
        }
    )
    record = first["record"]
    soup_record = {
        "config": record.get("config"),
        "data_sha256": record.get("data_sha256"),
        "seed": record.get("seed"),
        "soup": {
            "method": "the uniform average of the ingredients' tensors (models.training.soup)",
            "ingredients": [
                {"sha256": meta["sha256"], "record": {k: v for k, v in meta["record"].items() if k != "history"}}
                for _, meta in loaded
            ],
        },
    }
    return base, soup_record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.training.soup", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the soup's weights file (.pt, with its .json sidecar)")
    parser.add_argument("weights", nargs="+", type=Path, help="the ingredients, the one whose settings it keeps first")
    parser.add_argument(
        "--validate", action="store_true", help="score the ingredients and the soup on the ledger's set"
    )
    args = parser.parse_args(argv)
    try:
        model, record = soup(args.weights)
        save_weights(model, args.out, record)
        if args.validate:  # the soup is scored from its file: the tensors as they are stored (float16)
            from models.training.validate import validate_weights

            record["soup"]["ledger_validation"] = {
                "ingredients": [validate_weights(path) for path in args.weights],
                "soup": validate_weights(args.out),
            }
            save_weights(model, args.out, record)
        sidecar = args.out.with_suffix(".json")
        meta = json.loads(sidecar.read_text())
        kept = json.loads(args.weights[0].with_suffix(".json").read_text())
        meta.update({k: kept[k] for k in KEPT_SIDECAR_KEYS if k in kept and k not in meta})
        sidecar.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    except DsmarError as err:
        print(f"soup: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"weights": str(args.out), "sha256": meta["sha256"], **record["soup"]}, default=str)[:2000])
    return 0


if __name__ == "__main__":
    sys.exit(main())
