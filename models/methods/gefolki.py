"""`gefolki`: ONERA's GeFolki (Plyer, Colin-Koeniguer, Weissgerber 2015), the public dense flow for
heterogeneous optical/SAR pairs, as a peer in the benchmark. Optional: `pip install dsmar[bench]`.

Run with the parameters its documentation gives for optical/radar pairs (GEFolki, iteration=2,
radius=range(32, 4, -4), rank=4, levels=6; fewer pyramid levels where the image is too small for six).
The fixed image is GeFolki's reference I0, the moving one its secondary I1; its flow (u, v) resamples
I1 at (x + u, y + v), so the Contract-1 field is (v, u). GeFolki reports no confidence: it is 0.5 on
valid pixels.
"""

from __future__ import annotations

import numpy as np

from kernel.errors import InputError
from models.classical.features import fill_nodata
from models.preprocess import to_gray
from models.registry import integer, integers, register_method

DOCUMENTED = {"iteration": 2, "radius": tuple(range(32, 4, -4)), "rank": 4, "levels": 6}
MIN_TOP_LEVEL_PX = 16


def _load_gefolki():
    try:
        import gefolki
        import gefolki.adapthist
    except ImportError as err:
        raise InputError("method 'gefolki' needs the gefolki package: pip install dsmar[bench]") from err
    _patch_rescale_intensity(gefolki.adapthist)
    return gefolki


def _patch_rescale_intensity(adapthist) -> None:
    """GeFolki 1.1.0's CLAHE indexes a lookup table with `rescale_intensity(uint image, out_range=(lo, hi))`,
    which scikit-image >= 0.19 returns as float: give it back the integer dtype it was written for."""
    from skimage.exposure import rescale_intensity

    if getattr(adapthist.rescale_intensity, "_dsmar_compat", False):
        return

    def keep_integers(image, in_range="image", out_range="dtype"):
        out = rescale_intensity(image, in_range=in_range, out_range=out_range)
        if np.issubdtype(np.asarray(image).dtype, np.integer) and isinstance(out_range, tuple):
            return np.round(out).astype(np.asarray(image).dtype)
        return out

    keep_integers._dsmar_compat = True
    adapthist.rescale_intensity = keep_integers


def pyramid_levels(shape: tuple[int, int], wanted: int = DOCUMENTED["levels"]) -> int:
    """The documented depth, or as many halvings as keep the top level at least 16 px."""
    fit = int(np.floor(np.log2(min(shape) / MIN_TOP_LEVEL_PX)))
    return max(0, min(wanted, fit))


@register_method(
    "gefolki", options={"iteration": integer(1), "radius": integers(1), "rank": integer(), "levels": integer()}
)
def make_gefolki():
    gefolki = _load_gefolki()

    def run(fixed, moving, *, fixed_modality, moving_modality, **options):
        params = {**DOCUMENTED, **options}
        fixed_gray = to_gray(fixed, fixed_modality)
        reference, _ = fill_nodata(fixed_gray)
        secondary, _ = fill_nodata(to_gray(moving, moving_modality))
        u, v = gefolki.GEFolki(
            reference.astype(np.float32),
            secondary.astype(np.float32),
            iteration=int(params["iteration"]),
            radius=np.ravel(params["radius"]).tolist(),
            rank=int(params["rank"]),
            levels=pyramid_levels(reference.shape, int(params["levels"])),
        )
        field = np.stack([v, u]).astype(np.float32)
        confidence = np.where(np.isfinite(fixed_gray), 0.5, 0.0).astype(np.float32)
        return field, confidence

    return run
