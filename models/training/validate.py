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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from kernel.errors import DsmarError
from models.training.config import TrainConfig
from models.training.trainer import Trainer

LEDGER_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "train_gpu_continue.json"


@contextmanager
def ledger_trainer(weights: Path, config: Path = LEDGER_CONFIG, threads: int = 2) -> Iterator[Trainer]:
    """A trainer holding `weights` and the ledger's held-out batches, on the CPU, in float32 (the ledger's numbers
    compare across runs whatever precision each run trained in)."""
    from models.dsmar.weights import checked_metadata

    architecture = checked_metadata(weights)["config"]  # the weights' own network, fine matching stage included
    with tempfile.TemporaryDirectory() as scratch:
        cfg = TrainConfig.from_json(config, out=scratch, device="cpu")
        cfg = TrainConfig.from_dict(
            {**cfg.to_dict(), "init": str(weights), "threads": threads, "model": architecture, "bf16": False}
        )
        trainer = Trainer(cfg, log=lambda message: None)
        torch.manual_seed(0)
        yield trainer


def validate_weights(weights: Path, config: Path = LEDGER_CONFIG, threads: int = 2) -> dict[str, float | str]:
    """Median/mean end-point error (px), share under 1 px and folded share of `weights` on the ledger's set, and the
    sha256 of the pack that set was drawn from."""
    with ledger_trainer(weights, config, threads) as trainer:
        return {"pack_sha256": trainer.data_hash, **trainer.validate()}


def median_difference(
    weights: Path, against: Path, config: Path = LEDGER_CONFIG, threads: int = 2, draws: int = 1000
) -> dict[str, float | list[float]]:
    """The ledger's median EPE of `weights` minus that of `against`, and its 90 % interval over `draws` resamplings
    of the held-out crops, both sets of weights scored on the same resampled crops (seeded: the same every time)."""
    errors = []
    for path in (weights, against):
        with ledger_trainer(path, config, threads) as trainer:
            errors.append([crop.numpy() for crop in trainer.held_out_errors()[0]])
    ours, theirs = errors
    rng = np.random.default_rng(0)

    def median(crops: list[np.ndarray], picked) -> float:
        return float(np.median(np.concatenate([crops[i] for i in picked])))

    every = range(len(ours))
    picks = [rng.integers(0, len(ours), len(ours)) for _ in range(draws)]
    spread = [median(ours, p) - median(theirs, p) for p in picks]
    low, high = np.percentile(spread, [5, 95])
    return {"median_difference": median(ours, every) - median(theirs, every), "interval_90": [low, high]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.training.validate", description=__doc__.splitlines()[0])
    parser.add_argument("weights", nargs="+", type=Path, help="weights files (.pt with their .json sidecar)")
    parser.add_argument("--config", type=Path, default=LEDGER_CONFIG, help="the split and warps to score on")
    parser.add_argument("--against", type=Path, help="also the median's difference from these weights, paired")
    args = parser.parse_args(argv)
    try:
        for path in args.weights:
            scores: dict = {"weights": str(path), **validate_weights(path, args.config)}
            if args.against is not None:
                scores["against"] = {"weights": str(args.against), **median_difference(path, args.against, args.config)}
            print(json.dumps(scores), flush=True)
    except DsmarError as err:
        print(f"validate: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
