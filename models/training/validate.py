"""The training ledger's validation: any set of weights scored on one fixed held-out set, on the CPU.

Each training run validates on batches drawn by its own config (batch size, device generator), so their
numbers do not compare across runs. This scores weights the same way every time: the held-out pairs of
the training pack under `LEDGER_CONFIG`'s split and warps, drawn with the CPU generator. The held-out crops come
from the pack's bytes, so a pack rebuilt elsewhere (another PIL, another generator) scores on another set: every
score names its pack (`pack_sha256`), and only scores on one pack compare.

    python -m models.training.validate models/weights/dsmar.pt runs/dsmar-cpu/dsmar.pt
    python -m models.training.validate runs/dsmar-cpu/dsmar.pt --against models/weights/dsmar.pt

The set's own sampling noise is large (resampling its 128 crops moves the shipped weights' median by 0.16 px),
but two sets of weights scored on the same crops differ far less from draw to draw. `--against` resamples the
crops and reports the difference of the median EPE (weights minus `--against`) with its 90 % interval: a
continuation whose interval lies above zero is worse on this set, not only unlucky.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

from kernel.errors import DsmarError
from models.training.config import TrainConfig
from models.training.trainer import Trainer, held_out_scores

LEDGER_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train_gpu_continue.json"


def ledger_errors(weights: Path, config: Path = LEDGER_CONFIG, threads: int = 2) -> tuple[str, list, list[float]]:
    """`weights` run once over the ledger's held-out batches, on the CPU, in float32 (the ledger's numbers compare
    across runs whatever precision each run trained in): the pack's sha256, the per-crop end-point errors and the
    per-batch folded shares (`Trainer.held_out_errors`)."""
    from models.dsmar.weights import checked_metadata

    architecture = checked_metadata(weights)["config"]  # the weights' own network, fine matching stage included
    with tempfile.TemporaryDirectory() as scratch:
        cfg = TrainConfig.from_json(config, out=scratch, device="cpu")
        cfg = TrainConfig.from_dict(
            {
                **cfg.to_dict(),
                "init": str(weights),
                "threads": threads,
                "model": architecture,
                "bf16": False,
                "ema": 0.0,
            }
        )
        trainer = Trainer(cfg, log=lambda message: None)
        torch.manual_seed(0)
        return (trainer.data_hash, *trainer.held_out_errors())


def validate_weights(weights: Path, config: Path = LEDGER_CONFIG, threads: int = 2) -> dict[str, float | str]:
    """Median/mean end-point error (px), share under 1 px and folded share of `weights` on the ledger's set, and the
    sha256 of the pack that set was drawn from."""
    pack, crops, folds = ledger_errors(weights, config, threads)
    return {"pack_sha256": pack, **held_out_scores(crops, folds)}


def paired_difference(ours: list, theirs: list, draws: int = 1000) -> dict[str, float | list[float]]:
    """The median EPE over crops `ours` minus that over `theirs` (the same held-out crops, each scored by one set of
    weights), and its 90 % interval over `draws` resamplings of the crops, both read on the same resampled crops
    (seeded: the same every time)."""
    rng = np.random.default_rng(0)

    def median(crops: list, picked) -> float:
        return float(np.median(np.concatenate([np.asarray(crops[i]) for i in picked])))

    every = range(len(ours))
    picks = [rng.integers(0, len(ours), len(ours)) for _ in range(draws)]
    low, high = np.percentile([median(ours, p) - median(theirs, p) for p in picks], [5, 95])
    return {"median_difference": median(ours, every) - median(theirs, every), "interval_90": [low, high]}


def median_difference(
    weights: Path, against: Path, config: Path = LEDGER_CONFIG, threads: int = 2, draws: int = 1000
) -> dict[str, float | list[float]]:
    """`paired_difference` of the ledger's median EPE of `weights` and of `against`."""
    ours, theirs = (ledger_errors(path, config, threads)[1] for path in (weights, against))
    return paired_difference(ours, theirs, draws)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.training.validate", description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", type=Path, help="weights files (.pt with their .json sidecar)")
    parser.add_argument("--config", type=Path, default=LEDGER_CONFIG, help="the split and warps to score on")
    parser.add_argument("--against", type=Path, help="also the median's difference from these weights, paired")
    args = parser.parse_args(argv)
    try:
        theirs = ledger_errors(args.against, args.config)[1] if args.against is not None else None
        for path in args.weights:
            pack, crops, folds = ledger_errors(path, args.config)
            scores: dict = {"weights": str(path), "pack_sha256": pack, **held_out_scores(crops, folds)}
            if theirs is not None:
                scores["against"] = {"weights": str(args.against), **paired_difference(crops, theirs)}
            print(json.dumps(scores), flush=True)
    except DsmarError as err:
        print(f"validate: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
