"""The pipeline's tile registrator backed by a method of the pair API: the one place where the tile
pipeline (below) meets the registration methods (here), so the pipeline never imports a method."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernel.contracts import REFERENCE, MethodSpec
from models.api import register_pair
from pipeline.register_tiles import TileField, enough_valid


@dataclass(frozen=True)
class MethodRegistrator:
    """The real registrator: a method of the pair API (Contract 2) with the options of the run's spec
    (`models.api.method_spec`); a worker whose weights differ from the spec's refuses the tile."""

    method: MethodSpec

    def __call__(self, fixed: np.ndarray, moving: np.ndarray, *, moving_modality: str) -> TileField:
        if not (enough_valid(fixed) and enough_valid(moving)):
            return TileField.unmatched(fixed.shape[-2:])
        result = register_pair(
            fixed,
            moving,
            fixed_modality=REFERENCE,
            moving_modality=moving_modality,
            method=self.method,
        )
        return TileField(result.displacement, result.confidence)
