"""Roughly aligned real optical-SAR pairs without ground truth (../shared/data/unlabeled_sar), for the
self-supervised training term only: never scored.

`pairs.csv` names each pair's optical (`fixed`) and SAR (`moving`) image and, where the authors did not
pre-align it, a `prealign` file: a 2x3 (or 3x3) affine mapping optical pixel centres (x = column, y = row) to SAR
pixel coordinates, fitted to manual landmarks (`*_points.csv` beside it). `load_unlabeled_pair` brings the SAR
image onto the optical grid through it and crops both to their common valid rectangle: aligned to within the few
pixels (up to 14 on the non-affine scenes) that the self-supervised term is there to learn from.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from datagen.pairs import AlignedPair, homography_field, read_image, valid_crop
from kernel.errors import InputError
from kernel.warp import warp_image

COLUMNS = ("pair_id", "fixed", "moving", "prealign", "approx_residual_px", "source")
CATEGORY = "optical-sar-unlabeled"


@dataclass(frozen=True)
class UnlabeledRecord:
    pair_id: str
    fixed_path: Path
    moving_path: Path
    prealign_path: Path | None
    residual: str  # the authors' estimate of what misalignment is left, px (text: "1-5", "2-14 (non-affine)")


def read_unlabeled(folder: Path | str) -> list[UnlabeledRecord]:
    """The pairs `folder/pairs.csv` lists; InputError in one line where it is missing or malformed."""
    folder = Path(folder)
    table = folder / "pairs.csv"
    if not table.is_file():
        raise InputError(f"{table} not found: an unlabeled pairs folder holds a pairs.csv ({', '.join(COLUMNS)})")
    with table.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or any(c not in rows[0] for c in COLUMNS):
        raise InputError(f"{table} must have the columns {', '.join(COLUMNS)}")
    return [
        UnlabeledRecord(
            row["pair_id"],
            folder / row["fixed"],
            folder / row["moving"],
            folder / row["prealign"] if row["prealign"] else None,
            row["approx_residual_px"],
        )
        for row in rows
    ]


def read_prealign(path: Path) -> np.ndarray:
    """The 3x3 optical-to-SAR pixel affine of a prealign file (rows of numbers after `#` comments)."""
    rows = [line.split() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    try:
        matrix = np.array(rows, dtype=np.float64)
    except ValueError:
        raise InputError(f"{path}: a prealign file holds 2 or 3 rows of 3 numbers") from None
    if matrix.shape == (2, 3):
        matrix = np.vstack([matrix, [0.0, 0.0, 1.0]])
    if matrix.shape != (3, 3) or not np.allclose(matrix[2], [0.0, 0.0, 1.0]):
        raise InputError(f"{path}: a prealign file holds a 2x3 affine (or 3x3 with a last row 0 0 1)")
    return matrix


def load_unlabeled_pair(record: UnlabeledRecord, min_size: int = 64) -> AlignedPair:
    """The pair on the optical grid (through its prealign affine, if any), cropped to the fully valid rectangle."""
    fixed = read_image(record.fixed_path)
    moving = read_image(record.moving_path)
    if record.prealign_path is not None:
        moving = warp_image(moving, homography_field(read_prealign(record.prealign_path), fixed.shape[-2:]))
    elif moving.shape[-2:] != fixed.shape[-2:]:
        raise InputError(
            f"pair {record.pair_id}: {moving.shape[-2:]} SAR against {fixed.shape[-2:]} optical, no prealign"
        )
    return valid_crop(fixed, moving, "optical", "sar", CATEGORY, record.pair_id, min_size=min_size)
