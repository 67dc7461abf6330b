"""Real multimodal pairs: the catalogue (pairs.csv), images, ground truth, and aligned crops.

`load_aligned_pair` resamples the moving image onto the fixed grid through the ground-truth
`fixed_to_moving` homography H (the field H(p) - p, Contract 1) and crops both to the largest
axis-aligned rectangle where both are valid, so a method sees an aligned pair without no-data.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from kernel.errors import InputError
from kernel.warp import identity_grid, warp_image


@dataclass(frozen=True)
class PairRecord:
    """One row of pairs.csv with absolute paths."""

    pair_id: str
    split: str
    source: str
    category: str
    fixed_path: Path
    moving_path: Path
    fixed_modality: str
    moving_modality: str
    gt_path: Path
    gt_kind: str
    accuracy_px: float


@dataclass(frozen=True)
class GroundTruth:
    fixed_to_moving: np.ndarray
    landmarks: np.ndarray | None  # (N, 4): x_fixed, y_fixed, x_moving, y_moving
    accuracy_px: float


@dataclass(frozen=True)
class AlignedPair:
    """Fixed and moving (C, H, W) float32 on one grid, fully valid; `offset` is the crop's (row, col)."""

    fixed: np.ndarray
    moving: np.ndarray
    fixed_modality: str
    moving_modality: str
    category: str
    pair_id: str
    offset: tuple[int, int]


def read_pairs(pairs_dir: Path | str, split: str | None = None) -> list[PairRecord]:
    """The rows of `pairs_dir/pairs.csv` (all splits when `split` is None)."""
    pairs_dir = Path(pairs_dir)
    table = pairs_dir / "pairs.csv"
    if not table.exists():
        raise InputError(f"no pairs.csv in {pairs_dir} (give --pairs the folder of the real pairs)")
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    records = [
        PairRecord(
            pair_id=r["pair_id"],
            split=r["split"],
            source=r["source"],
            category=r["category"],
            fixed_path=pairs_dir / r["fixed"],
            moving_path=pairs_dir / r["moving"],
            fixed_modality=r["fixed_modality"],
            moving_modality=r["moving_modality"],
            gt_path=pairs_dir / r["gt"],
            gt_kind=r["gt_kind"],
            accuracy_px=float(r["accuracy_px"]),
        )
        for r in rows
        if split is None or r["split"] == split
    ]
    if split is not None and not records:
        raise InputError(f"no pairs in split {split!r} of {table}")
    return records


def doubtful_ground_truth(record: PairRecord) -> str | None:
    """Why the pair's ground truth is known not to align it ("label: explanation"), or None if usable.

    SRIF's optical-SAR pairs (train and eval): after undoing `fixed_to_moving` the SAR image still
    differs from the optical one in scale and orientation (benchmarks/tuning.md, "Known data problem"),
    so every method, identity included, scores about 6-7 px there whatever it does. Their scores are
    kept, but set aside where methods are compared. The one place that decides which pairs these are.
    """
    if record.source.startswith("SRIF") and record.category == "optical-sar":
        return "SRIF optical-SAR: after undoing fixed_to_moving the SAR image still differs in scale and orientation"
    return None


def read_image(path: Path) -> np.ndarray:
    """(C, H, W) float32 in the file's own units; palette images are expanded to RGB."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as src:
                data = src.read().astype(np.float32)
                nodata = src.nodata
        if nodata is not None and np.isfinite(nodata):
            data[data == nodata] = np.nan
        return data
    from PIL import Image

    with Image.open(path) as img:
        if img.mode not in ("L", "RGB", "F", "I", "I;16"):
            img = img.convert("RGB")
        array = np.asarray(img, dtype=np.float32)
    return array[None] if array.ndim == 2 else np.moveaxis(array, -1, 0).copy()


def read_ground_truth(record: PairRecord) -> GroundTruth:
    gt = json.loads(record.gt_path.read_text())
    landmarks = gt.get("landmarks")
    return GroundTruth(
        fixed_to_moving=np.asarray(gt["fixed_to_moving"], dtype=np.float64),
        landmarks=None if not landmarks else np.asarray(landmarks, dtype=np.float64),
        accuracy_px=float(gt.get("accuracy_px", record.accuracy_px)),
    )


def homography_field(h_matrix: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Contract-1 field (2, H, W) of a fixed-to-moving homography acting on (x, y, 1)."""
    grid = identity_grid(shape).astype(np.float64)
    ones = np.ones(shape)
    mapped = np.tensordot(h_matrix, np.stack([grid[1], grid[0], ones]), axes=1)
    x, y = mapped[0] / mapped[2], mapped[1] / mapped[2]
    return np.stack([y - grid[0], x - grid[1]]).astype(np.float32)


def mask_border_fill(image: np.ndarray, level: float = 3.0) -> np.ndarray:
    """NaN over near-black regions touching the border: the fill of an image rotated by its authors."""
    dark = np.nanmax(np.abs(image), axis=0) <= level
    labels, _ = ndimage.label(dark)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    fill = np.isin(labels, border[border > 0])
    fill = ndimage.binary_dilation(fill, iterations=2)
    return np.where(fill[None], np.nan, image).astype(np.float32)


def largest_valid_rectangle(valid: np.ndarray, block: int = 4) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a large axis-aligned rectangle fully inside `valid`.

    Exact on blocks of `block` pixels (a block counts only if all its pixels are valid), which keeps the
    histogram algorithm cheap; the result is therefore fully valid and at most a block short per side.
    """
    h, w = valid.shape
    hb, wb = h // block, w // block
    blocks = valid[: hb * block, : wb * block].reshape(hb, block, wb, block).all(axis=(1, 3))
    best = (0, 0, 0, 0)
    heights = np.zeros(wb, dtype=int)
    for row in range(hb):
        heights = np.where(blocks[row], heights + 1, 0)
        stack: list[int] = []
        for col in range(wb + 1):
            current = heights[col] if col < wb else 0
            while stack and heights[stack[-1]] >= current:
                top_h = heights[stack.pop()]
                left = stack[-1] + 1 if stack else 0
                if top_h * (col - left) > best[2] * best[3]:
                    best = (row - top_h + 1, left, top_h, col - left)
            stack.append(col)
    top, left, height, width = best
    return top * block, left * block, height * block, width * block


def load_aligned_pair(record: PairRecord, min_size: int = 64) -> AlignedPair:
    """The pair on the fixed grid through the ground truth, cropped to its fully valid rectangle."""
    fixed = read_image(record.fixed_path)
    moving = read_image(record.moving_path)
    if record.gt_kind == "similarity":
        moving = mask_border_fill(moving)
    gt = read_ground_truth(record)
    aligned = warp_image(moving, homography_field(gt.fixed_to_moving, fixed.shape[-2:]))
    names = (record.fixed_modality, record.moving_modality, record.category, record.pair_id)
    return valid_crop(fixed, aligned, *names, min_size=min_size)


def valid_crop(
    fixed: np.ndarray,
    aligned: np.ndarray,
    fixed_modality: str,
    moving_modality: str,
    category: str,
    pair_id: str,
    min_size: int = 64,
) -> AlignedPair:
    """A pair on one grid cropped to the rectangle valid in both images; InputError where it is under `min_size`."""
    valid = np.isfinite(fixed).all(axis=0) & np.isfinite(aligned).all(axis=0)
    top, left, height, width = largest_valid_rectangle(valid)
    if min(height, width) < min_size:
        raise InputError(f"pair {pair_id}: aligned valid area {height} x {width} is under {min_size} px")
    window = (slice(None), slice(top, top + height), slice(left, left + width))
    return AlignedPair(
        fixed=np.ascontiguousarray(fixed[window]),
        moving=np.ascontiguousarray(aligned[window]),
        fixed_modality=fixed_modality,
        moving_modality=moving_modality,
        category=category,
        pair_id=pair_id,
        offset=(top, left),
    )


def landmarks(record: PairRecord) -> np.ndarray | None:
    """The manual landmarks (N, 4) x_fixed, y_fixed, x_moving, y_moving, or None."""
    return read_ground_truth(record).landmarks
