"""A model soup: the uniform average of weights that continue one another, as one weights file.

    python -m models.training.soup OUT.pt models/weights/dsmar.pt runs/dsmar-cpu-20/dsmar.pt [--validate]

Continuations of one set of weights (the same network, trained on from the same start) lie in one basin, and
their average often validates better than each of them (Wortsman et al., "Model soups", 2022): the CPU runs that
continue the shipped weights each move the ledger's median and mean EPE in opposite directions, and their
average with the weights they started from improved both. The soup's record names its ingredients, and with
`--validate` their ledger scores and its own. It takes the first ingredient's sidecar settings (`KEPT_SIDECAR_KEYS`:
the method's tuned "inference" belongs to the network, not to one set of its weights; "gpu_throughput" names the
weights it was measured on) and the modalities the weights were trained on, which every ingredient must share.
OUT is written once, after everything else succeeded, so it may be one of the ingredients.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from kernel.errors import DsmarError, InputError
from models.dsmar.network import DSMAR
from models.dsmar.weights import load_weights, save_weights

KEPT_SIDECAR_KEYS = ("inference", "gpu_throughput")
# Record fields of the first ingredient the soup keeps: what it was trained on, as the method reads it (the
# modalities decide which embeddings `models.dsmar.infer.modality_id` uses).
KEPT_RECORD_KEYS = ("config", "data_sha256", "seed", "modalities")
# Record fields each ingredient is summarised by: where it came from and how long it trained (the ledger has the rest).
INGREDIENT_KEYS = ("seed", "device", "total_steps", "finished")


def soup(paths: list[Path]) -> tuple[DSMAR, dict, dict]:
    """The uniform average of the weights at `paths` (two or more of one network, trained on the same modalities),
    its record and the first ingredient's sidecar settings."""
    if len(paths) < 2:
        raise InputError("a soup needs two or more weights files")
    loaded = [load_weights(path) for path in paths]
    base, first = loaded[0]
    for (model, meta), path in zip(loaded[1:], paths[1:], strict=True):
        if model.config != base.config:
            raise InputError(f"{path} is another network than {paths[0]}: only continuations of one network average")
        if meta["record"].get("modalities") != first["record"].get("modalities"):
            raise InputError(f"{path} was trained on other modalities than {paths[0]}: their embeddings do not average")
    states = [model.state_dict() for model, _ in loaded]
    base.load_state_dict(
        {
            name: sum(state[name] for state in states) / len(states) if tensor.is_floating_point() else tensor
            for name, tensor in states[0].items()
        }
    )
    record = {key: first["record"][key] for key in KEPT_RECORD_KEYS if key in first["record"]}
    record["soup"] = {
        "method": "the uniform average of the ingredients' tensors (models.training.soup)",
        "ingredients": [_ingredient(meta) for _, meta in loaded],
    }
    return base, record, {key: first[key] for key in KEPT_SIDECAR_KEYS if key in first}


def _ingredient(meta: dict) -> dict:
    """What identifies one ingredient: its checksum and the fields of `INGREDIENT_KEYS`; a soup ingredient names
    its own ingredients by checksum only, so a soup of soups stays one level deep."""
    summary = {"sha256": meta["sha256"]}
    summary.update({key: meta["record"][key] for key in INGREDIENT_KEYS if key in meta["record"]})
    if "soup" in meta["record"]:
        summary["soup_of"] = [part["sha256"] for part in meta["record"]["soup"]["ingredients"]]
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.training.soup", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the soup's weights file (.pt, with its .json sidecar)")
    parser.add_argument("weights", nargs="+", type=Path, help="the ingredients, the one whose settings it keeps first")
    parser.add_argument(
        "--validate", action="store_true", help="score the ingredients and the soup on the ledger's set"
    )
    args = parser.parse_args(argv)
    try:
        model, record, settings = soup(args.weights)
        if args.validate:  # the soup is scored from a file: the tensors as they are stored (float16)
            from models.training.validate import validate_weights

            scores = [validate_weights(path) for path in args.weights]
            with tempfile.TemporaryDirectory() as scratch:
                trial = Path(scratch) / "soup.pt"
                save_weights(model, trial, record)
                record["soup"]["ledger_validation"] = {"ingredients": scores, "soup": validate_weights(trial)}
        sha256 = save_weights(model, args.out, record, settings)["sha256"]
    except DsmarError as err:
        print(f"soup: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"weights": str(args.out), "sha256": sha256, **record["soup"].get("ledger_validation", {})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
