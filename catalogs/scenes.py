"""Scene sets: what co-location hands to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import pystac


@dataclass(frozen=True)
class AssetKeys:
    """Which assets of an item hold each band, per catalog (Earth Search `red` vs Planetary Computer `B04`).

    The cube's band names are the keys of these mappings, so the pipeline never sees catalog spellings.
    """

    optical: dict[str, str] = field(
        default_factory=lambda: {"blue": "blue", "green": "green", "red": "red", "nir": "nir"}
    )
    sar: dict[str, str] = field(default_factory=lambda: {"vv": "vv", "vh": "vh"})
    dem: dict[str, str] = field(default_factory=lambda: {"elevation": "data"})


@dataclass(frozen=True)
class SceneSet:
    """One optical reference scene with the SAR and DEM items chosen to align onto it."""

    optical: pystac.Item
    sar: tuple[pystac.Item, ...]
    dem: tuple[pystac.Item, ...]
    overlap: float  # share of the AOI covered by the optical footprint, 0..1
    time_gap_hours: float  # |SAR time - optical time| of the nearest SAR item
    asset_keys: AssetKeys
    reasons: tuple[str, ...] = ()  # why these items were chosen, for reports

    def to_summary(self) -> dict:
        """The JSON object `dsmar search --json` prints for this scene set."""
        return {
            "optical": self.optical.id,
            "sar": [item.id for item in self.sar],
            "dem": [item.id for item in self.dem],
            "overlap": round(self.overlap, 4),
            "time_gap_hours": round(self.time_gap_hours, 3),
        }
