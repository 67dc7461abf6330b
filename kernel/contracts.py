"""The contracts every layer shares, as code (the text is docs/architecture.md).

- Contract 1, the displacement convention: a field `d` of shape (2, H, W), float32, (dy, dx) in pixels
  of the fixed grid, defined on the fixed grid: fixed pixel centre (y, x) matches the moving location
  (y + dy, x + dx), and `warped[y, x] = moving(y + d[0, y, x], x + d[1, y, x])` (`kernel.warp`).
- Contract 2, the pair API: `models.register_pair(fixed, moving, fixed_modality, moving_modality,
  method=DEFAULT_METHOD)` on images of at least MIN_SIZE pixels a side, in any of MODALITIES.
- Contract 3, the Zarr cube, and Contract 4, the embedded demo: docs/architecture.md.
- A method's identity, `MethodSpec`: what fixes a method's output, made only by `models.api.method_spec`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

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
    backscatter: bool = False  # radar backscatter, which may arrive as linear power: methods see it in dB
    elevation: bool = False  # heights: quicklooks show it shaded, since raw heights hide a few pixels' shift
    # The least tile side (reference pixels) it is registered on, whatever the cube's chunk size: a coarse
    # product (a 30 m DEM on 10 m pixels) holds too little texture in a small chunk to be matched there.
    # 0: registered on the chunk tiles themselves (`pipeline.register_tiles.registration_plan`).
    registration_tile: int = 0

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

    @property
    def quality_var(self) -> str:
        """The cube variable of the per-time quality flags of that displacement (`pipeline.quality`)."""
        return f"quality_{self.name}"


_REGISTRY = (
    Modality(
        "optical",
        reference=True,
        units="1",
        long_name="optical reflectance (the reference: every other variable is on its grid)",
    ),
    Modality(
        "sar", registered=True, units="dB", long_name="SAR backscatter aligned onto the optical grid", backscatter=True
    ),
    Modality(
        "dem",
        registered=True,
        units="m",
        long_name="elevation aligned onto the optical grid",
        elevation=True,
        registration_tile=512,
    ),
    *(Modality(name) for name in ("infrared", "map", "night")),
    Modality("lidar-dsm", elevation=True),
    *(Modality(name) for name in ("lidar-intensity", "depth-render", "other")),
)
MODALITY = {modality.name: modality for modality in _REGISTRY}
MODALITIES = tuple(MODALITY)  # the names the pair API accepts
REFERENCE = next(modality.name for modality in _REGISTRY if modality.reference)
REGISTERED = tuple(modality.name for modality in _REGISTRY if modality.registered)  # what the pipeline aligns


# The pair API refuses smaller images; Contract 2 promises every method from 64 x 64 up (tests/test_method_contract.py).
MIN_SIZE = 32
DEFAULT_METHOD = "dsmar"  # the most accurate on the usable benchmark pairs (docs/accuracy.md)


# --- A method's identity -------------------------------------------------------------------------------------------

Pairs = tuple[tuple[str, Any], ...]


def _pairs(values: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> Pairs:
    """Sorted (key, value) pairs with JSON values (tuples become lists), so a spec equals its JSON round trip."""
    items = dict(values.items() if isinstance(values, Mapping) else values)
    return tuple((str(key), json.loads(json.dumps(items[key]))) for key in sorted(items))


@dataclass(frozen=True)
class MethodSpec:
    """A registration method as it runs: its name, the options given to it, the sha256 of the weights it
    loads (None for a method without weights) and its effective settings (its own defaults, such as the
    weights' tuned inference settings, merged with the options). Built only by `models.api.method_spec`,
    which resolves the weights and settings; the cube attrs, the tile-skip fingerprint and the demo's
    stamp all read this one object, so what ran and what is recorded cannot differ."""

    name: str
    options: Pairs | Mapping[str, Any] = ()
    weights_sha256: str | None = None
    settings: Pairs | Mapping[str, Any] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", _pairs(self.options))
        object.__setattr__(self, "settings", _pairs(self.settings))

    def __hash__(self) -> int:  # values may be lists: hash what identifies the spec
        return hash((self.text, self.fingerprint))

    @property
    def kwargs(self) -> dict[str, Any]:
        """The options as keyword arguments of `register_pair`."""
        return dict(self.options)

    @property
    def text(self) -> str:
        """The spec as the command line takes it: `name` or `name:key=value:...` (values as JSON)."""
        return ":".join([self.name, *(f"{key}={json.dumps(value)}" for key, value in self.kwargs.items())])

    @property
    def fingerprint(self) -> str:
        """What fixes the method's output (name, weights, effective settings), as 16 hex digits.
        Options are in the settings; an option that only names the weights changes the checksum instead."""
        blob = json.dumps([self.name, self.weights_sha256, dict(self.settings)], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "options": dict(self.options),
                "weights_sha256": self.weights_sha256,
                "settings": dict(self.settings),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> MethodSpec:
        blob = json.loads(text)
        return cls(blob["name"], blob.get("options", {}), blob.get("weights_sha256"), blob.get("settings", {}))
