"""A weights file of the shipped DS-MAR's architecture, freshly initialised: what the network's tests are
run against to show that the training matters (`python -m tests.untrained_weights OUT.pt`).

It carries the shipped sidecar's inference settings and modality list, so that only the weights differ.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from models.dsmar.network import DSMAR, DSMARConfig
from models.dsmar.weights import DEFAULT_WEIGHTS, save_weights


def write_untrained(path: Path, seed: int = 0) -> Path:
    shipped = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    torch.manual_seed(seed)
    model = DSMAR(DSMARConfig.from_dict(shipped["config"]))
    save_weights(model, path, record={"modalities": shipped["record"]["modalities"], "untrained": True})
    sidecar = Path(path).with_suffix(".json")
    meta = json.loads(sidecar.read_text())
    sidecar.write_text(json.dumps({**meta, "inference": shipped["inference"]}, indent=1, sort_keys=True) + "\n")
    return Path(path)


if __name__ == "__main__":
    print(write_untrained(Path(sys.argv[1])))
