"""The contracts every layer shares, as code (the text is docs/architecture.md).

- Contract 1, the displacement convention: a field `d` of shape (2, H, W), float32, (dy, dx) in pixels
  of the fixed grid, defined on the fixed grid: fixed pixel centre (y, x) matches the moving location
  (y + dy, x + dx), and `warped[y, x] = moving(y + d[0, y, x], x + d[1, y, x])` (`kernel.warp`).
- Contract 2, the pair API: `models.register_pair(fixed, moving, fixed_modality, moving_modality,
  method=DEFAULT_METHOD)` on images of at least MIN_SIZE pixels a side, in any of MODALITIES.
- Contract 3, the Zarr cube, and Contract 4, the embedded demo: docs/architecture.md.
"""

from __future__ import annotations

DISPLACEMENT_CONVENTION = "Contract 1: (dy, dx) in optical pixels; warped[y, x] = moving(y + dy, x + dx)"

MODALITIES = (
    "optical",
    "sar",
    "dem",
    "infrared",
    "map",
    "night",
    "lidar-dsm",
    "lidar-intensity",
    "depth-render",
    "other",
)
MIN_SIZE = 32
DEFAULT_METHOD = "dsmar"  # the most accurate on the usable benchmark pairs (docs/accuracy.md)
