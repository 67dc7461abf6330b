"""The training ledger's validation: any set of weights scored on one fixed held-out set, on the CPU.

Each training run validates on batches drawn by its own config (batch size, device generator), so their
numbers do not compare across runs. This scores weights the same way every time: the held-out pairs of
the training pack under `LEDGER_CONFIG`'s split and warps, drawn with the CPU generator. The held-out crops come
from the pack's bytes, so a pack rebuilt elsewhere (another PIL, another generator) scores on another set: every
score names its pack (`pack_sha256`), and only scores on one pack compare.

    python -m models.training.validate models/weights/dsmar.pt runs/dsmar-cpu/dsmar.pt
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from kernel.errors import DsmarError
from models.training.config import TrainConfig

LEDGER_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train_gpu_continue.json"


def validate_weights(weights: Path, config: Path = LEDGER_CONFIG, threads: int = 2) -> dict[str, float | str]:
    """Median/mean end-point error (px), share under 1 px and folded share of `weights` on the ledger's set, and the
    sha256 of the pack that set was drawn from."""
    from models.dsmar.weights import checked_metadata
    from models.training.trainer import Trainer

    architecture = checked_metadata(weights)["config"]  # the weights' own network, fine matching stage included
    with tempfile.TemporaryDirectory() as scratch:
        cfg = TrainConfig.from_json(config, out=scratch, device="cpu")
        # float32: the ledger's numbers compare across runs whatever precision each run trained in.
        cfg = TrainConfig.from_dict(
            {**cfg.to_dict(), "init": str(weights), "threads": threads, "model": architecture, "bf16": False}
        )
        trainer = Trainer(cfg, log=lambda message: None)
        torch.manual_seed(0)
        return {"pack_sha256": trainer.data_hash, **trainer.validate()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.training.validate", description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", type=Path, help="weights files (.pt with their .json sidecar)")
    parser.add_argument("--config", type=Path, default=LEDGER_CONFIG, help="the split and warps to score on")
    args = parser.parse_args(argv)
    try:
        for path in args.weights:
            print(json.dumps({"weights": str(path), **validate_weights(path, args.config)}), flush=True)
    except DsmarError as err:
        print(f"validate: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
