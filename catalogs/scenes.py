"""Scene sets: what co-location hands to the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import pystac

from kernel.contracts import MODALITY, REFERENCE, REGISTERED


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

    def of(self, modality: str) -> dict[str, str]:
        """Band name -> asset key of one modality of `kernel.contracts.MODALITY` the pipeline uses."""
        return getattr(self, MODALITY[modality].name)


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

    def items(self, modality: str) -> tuple[pystac.Item, ...]:
        """The items of one modality of `kernel.contracts.MODALITY` the pipeline uses (the reference: one)."""
        found = getattr(self, MODALITY[modality].name)
        return (found,) if isinstance(found, pystac.Item) else found

    def to_summary(self) -> dict:
        """The JSON object `dsmar search --json` prints for this scene set."""
        return {
            REFERENCE: self.optical.id,
            **{modality: [item.id for item in self.items(modality)] for modality in REGISTERED},
            "overlap": round(self.overlap, 4),
            "time_gap_hours": round(self.time_gap_hours, 3),
        }
