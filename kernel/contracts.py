"""The contracts every layer shares, as code (the text is docs/architecture.md).

- Contract 1, the displacement convention: a field `d` of shape (2, H, W), float32, (dy, dx) in pixels
  of the fixed grid, defined on the fixed grid: fixed pixel centre (y, x) matches the moving location
  (y + dy, x + dx), and `warped[y, x] = moving(y + d[0, y, x], x + d[1, y, x])` (`kernel.warp`).
- Contract 2, the pair API: `models.register_pair(fixed, moving, fixed_modality, moving_modality,
  method=DEFAULT_METHOD)` on images of at least MIN_SIZE pixels a side, in any of MODALITIES.
- Contract 3, the Zarr cube, and Contract 4, the embedded demo: docs/architecture.md.
"""

from __future__ import annotations

from dataclasses import dataclass

DISPLACEMENT_CONVENTION = "Contract 1: (dy, dx) in optical pixels; warped[y, x] = moving(y + dy, x + dx)"


# Modalities: the one registry of image kinds.


@dataclass(frozen=True)
class Modality:
    """One kind of image and what every layer needs to know of it (the registry below is the only list).

    The production pipeline searches, loads and writes the `reference` modality and the `registered`
    ones; the pair API takes any of them.
    """

    name: str
    reference: bool = False  # the grid every other modality is registered onto (exactly one)
    registered: bool = False  # the pipeline registers it onto the reference and writes it to the cube
    units: str = ""  # CF units of its cube variable: the loader's physical units
    long_name: str = ""  # CF long name of its cube variable

    @property
    def band_dim(self) -> str:
        """The cube dimension of its bands."""
        return f"band_{self.name}"

    @property
    def displacement_var(self) -> str:
        """The cube variable of its displacement onto the reference (Contract 1)."""
        return f"displacement_{self.name}"

    @property
    def confidence_var(self) -> str:
        """The cube variable of the confidence in that displacement."""
        return f"confidence_{self.name}"


_REGISTRY = (
    Modality(
        "optical",
        reference=True,
        units="1",
        long_name="optical reflectance (the reference: every other variable is on its grid)",
    ),
    Modality("sar", registered=True, units="dB", long_name="SAR backscatter aligned onto the optical grid"),
    Modality("dem", registered=True, units="m", long_name="elevation aligned onto the optical grid"),
    *(Modality(name) for name in ("infrared", "map", "night", "lidar-dsm", "lidar-intensity", "depth-render", "other")),
)
MODALITY = {modality.name: modality for modality in _REGISTRY}
MODALITIES = tuple(MODALITY)  # the names the pair API accepts
REFERENCE = next(modality.name for modality in _REGISTRY if modality.reference)
REGISTERED = tuple(modality.name for modality in _REGISTRY if modality.registered)  # what the pipeline aligns


MIN_SIZE = 32
DEFAULT_METHOD = "dsmar"  # the most accurate on the usable benchmark pairs (docs/accuracy.md)
