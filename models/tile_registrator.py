"""The pipeline's tile registrator backed by a method of the pair API: the one place where the tile
pipeline (below) meets the registration methods (here), so the pipeline never imports a method."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kernel.contracts import REFERENCE, MethodSpec
from models.api import method_spec, register_pair
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

    def weights_here(self) -> str | None:
        """The weights checksum the method resolves to in this process (a worker's own files and environment)."""
        return method_spec(self.method).weights_sha256

    def warm(self) -> None:
        """Load the method (weights, device) once in this process, before its first tile: threads of a
        GPU worker would otherwise each load it on their first tile."""
        size = 64  # the smallest pair the API takes
        rows = np.linspace(0.0, 1.0, size, dtype=np.float32)
        image = np.add.outer(rows, rows) + np.sin(np.arange(size, dtype=np.float32))[:, None]
        register_pair(image, image, fixed_modality=REFERENCE, moving_modality="sar", method=self.method)
