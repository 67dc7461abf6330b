"""Tune the window baselines on the `train` split only: one factor at a time around the defaults.

    python -m benchmarks.tune --pairs ../shared/data/pairs --per-category 10 --workers 2

Scores each setting on pairs drawn evenly from each train category by the dense track's end-point
error (median over pairs of the per-pair median, and the mean of per-pair means, which punishes
failures) and by warp recovery (median over pairs), which the ground truth's own 1-3 px error does not
floor; `--combine` scores combinations of the one-factor winners instead of the one-factor grid.
"""

from __future__ import annotations

import argparse
import dataclasses
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.accuracy import pair_seed
from benchmarks.metrics import warp_recovery_error
from datagen.pairs import PairRecord, load_aligned_pair, read_pairs
from datagen.warps import benchmark_warp, inside_mask, invert_warp
from kernel.field_metrics import end_point_error
from kernel.warp import warp_image
from models.classical.features import cfog, mind_ssc
from models.classical.register import WindowConfig, register_windows
from models.preprocess import to_gray

DESCRIPTORS = {
    "cfog": partial(cfog, orientations=9, sigma=0.8),
    "cfog-6": partial(cfog, orientations=6, sigma=0.8),
    "cfog-s1.5": partial(cfog, orientations=9, sigma=1.5),
    "mind": partial(mind_ssc, radius=1, dilation=1),
    "mind-d2": partial(mind_ssc, radius=1, dilation=2),
    "mind-r2": partial(mind_ssc, radius=2, dilation=2),
}
GRID = {
    "fine_window": (48, 96),
    "fine_step": (24,),
    "fine_radius": (3, 8),
    "min_distinct": (0.02, 0.1, 0.2),
    "sigma_cells": (0.7, 1.5),
    "coarse_window": (128,),
    "affine_threshold": (2.0, 4.0),
    "max_shift": (28,),
}


def pick_pairs(pairs_dir: Path, per_category: int) -> list[PairRecord]:
    records = read_pairs(pairs_dir, "train")
    picked = []
    for category in sorted({r.category for r in records}):
        members = [r for r in records if r.category == category]
        idx = np.linspace(0, len(members) - 1, min(per_category, len(members))).round().astype(int)
        picked += [members[i] for i in sorted(set(idx))]
    return picked


def score(record: PairRecord, settings: list[tuple[str, str, dict]]) -> list[tuple[float, float, float]]:
    """(median EPE, mean EPE, median warp recovery) of every (name, descriptor, options) on one pair."""
    pair = load_aligned_pair(record)
    warp = benchmark_warp(pair.fixed.shape[-2:], pair_seed(0, record.pair_id))
    truth = invert_warp(warp)
    inside = inside_mask(truth)
    fixed = to_gray(pair.fixed, pair.fixed_modality)
    moving = to_gray(pair.moving, pair.moving_modality)
    warped = to_gray(warp_image(pair.moving, warp), pair.moving_modality)
    out = []
    for _, descriptor, options in settings:
        config = WindowConfig(**options)
        d1, _ = register_windows(fixed, warped, DESCRIPTORS[descriptor], config)
        d0, _ = register_windows(fixed, moving, DESCRIPTORS[descriptor], config)
        epe = end_point_error(d1, truth)[inside]
        recovery = warp_recovery_error(d1, warp, d0)[inside]
        out.append((float(np.median(epe)), float(epe.mean()), float(np.median(recovery))))
    return out


COMBINED = {
    "no global prior": {"max_global_shift": 0},
    "fine step 16": {"fine_step": 16},
    "first defaults + fine_step=24, coarse_window=128": {"max_shift": 20, "fine_step": 24, "coarse_window": 128},
    "first defaults + fine_step=24, coarse_window=128, max_shift=28": {"fine_step": 24, "coarse_window": 128},
}


def settings_for(descriptor: str, combine: bool, descriptors_only: bool = False) -> list[tuple[str, str, dict]]:
    base = [(f"{descriptor} defaults", descriptor, {})]
    extra = [(f"{name} defaults", name, {}) for name in DESCRIPTORS if name.startswith(descriptor + "-")]
    if descriptors_only:
        return base + extra
    if combine:
        return base + [(f"{descriptor} {name}", descriptor, options) for name, options in COMBINED.items()]
    variants = [
        (f"{descriptor} {key}={value}", descriptor, {key: value}) for key, values in GRID.items() for value in values
    ]
    return base + variants + extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/pairs")
    parser.add_argument("--per-category", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--descriptor", default="cfog", choices=("cfog", "mind"))
    parser.add_argument("--combine", action="store_true")
    parser.add_argument("--descriptors-only", action="store_true")
    args = parser.parse_args()
    records = pick_pairs(args.pairs, args.per_category)
    settings = settings_for(args.descriptor, args.combine, args.descriptors_only)
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(partial(score, settings=settings), records))
    scores = np.array(rows)  # (pairs, settings, 2)
    defaults = WindowConfig()
    print(f"{len(records)} train pairs; defaults {dataclasses.asdict(defaults)}")
    print("| setting | median EPE | mean EPE | pairs < 2 px | recovery median |")
    print("|---|---|---|---|---|")
    for k, (name, _, _) in enumerate(settings):
        med, mean, rec = scores[:, k, 0], scores[:, k, 1], scores[:, k, 2]
        print(
            f"| {name} | {np.median(med):.2f} | {np.mean(mean):.2f} | {np.mean(med < 2):.0%} | {np.median(rec):.2f} |"
        )


if __name__ == "__main__":
    main()
