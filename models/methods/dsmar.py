"""`dsmar`: the DS-MAR network with the shipped weights (models/weights/dsmar.pt, sha256-checked).

`weights=` (or the environment variable DSMAR_WEIGHTS, which reaches benchmark worker processes)
points the method at another weights file, such as an ablation's; it is checked the same way.
`iterations=` re-registers the warped moving image and composes; `augment=` averages over that many
rotated/mirrored frames (1, 2, 4, 8); `polish=` (px, 0 = off) corrects the network's field by the
classical MIND-SSC fine window stage searched that far around it (a hybrid step: `polish=0` is the
network alone). Each defaults to the value recorded under "inference" in the weights' sidecar (tuned
on the train split), else 1 frame, 1 iteration, no polish.
"""

from __future__ import annotations

import os

from functools import lru_cache
from pathlib import Path

import numpy as np

from models.api import register_method


@lru_cache(maxsize=4)
def _load(path: str):
    from models.dsmar.weights import load_weights

    return load_weights(Path(path))


def _weights(weights: str | Path | None = None):
    """(model, sidecar metadata) of `weights`, else DSMAR_WEIGHTS, else the shipped file; loaded once."""
    from models.dsmar.weights import DEFAULT_WEIGHTS

    return _load(str(weights or os.environ.get("DSMAR_WEIGHTS") or DEFAULT_WEIGHTS))


@register_method("dsmar")
def make_dsmar():
    from models.dsmar.infer import predict_field

    def dsmar(
        fixed: np.ndarray, moving: np.ndarray, *, fixed_modality: str, moving_modality: str,
        weights: str | Path | None = None, tile: int = 1024, overlap: int = 128, device: str | None = None,
        iterations: int | None = None, optimise: dict | None = None, augment: int | None = None,
        polish: int | None = None, **_,
    ) -> tuple[np.ndarray, np.ndarray]:
        model, meta = _weights(weights)
        tuned = meta.get("inference", {})  # the weights' own settings, tuned on the train split
        iterations = int(tuned.get("iterations", 1)) if iterations is None else iterations
        augment = int(tuned.get("augment", 1)) if augment is None else augment
        optimise = tuned.get("optimise") if optimise is None else optimise
        polish = int(tuned.get("polish", 0)) if polish is None else polish
        field, confidence = predict_field(
            model, fixed, moving, fixed_modality, moving_modality,
            known_modalities=meta.get("record", {}).get("modalities"), tile=tile, overlap=overlap, device=device,
            iterations=iterations, optimise=optimise, augment=augment,
        )
        if polish:
            field = _polish(fixed, moving, field, fixed_modality, moving_modality, polish)
        return field, confidence

    return dsmar


def _polish(fixed, moving, field, fixed_modality: str, moving_modality: str, radius: int) -> np.ndarray:
    """The network's field corrected by MIND-SSC window matching searched at most `radius` px around it."""
    from models.classical.register import WindowConfig, polish
    from models.methods.mind import describe
    from models.preprocess import to_gray

    return polish(to_gray(fixed, fixed_modality), to_gray(moving, moving_modality), field, describe,
                  WindowConfig(fine_radius=radius))


def weights_metadata(weights: str | Path | None = None) -> dict:
    """The sidecar metadata (checksum, record, measured speeds) of the weights `dsmar` uses."""
    return _weights(weights)[1]


def weights_sha256(weights: str | Path | None = None) -> str:
    """The checksum of the weights `dsmar` uses (for Zarr attrs and reports)."""
    return weights_metadata(weights)["sha256"]
