"""Tune the window baselines on the `train` split only: one factor at a time around the defaults.

    python -m benchmarks.tune --pairs ../shared/data/pairs --per-category 10 --workers 2

Scores each setting by the dense track's end-point error (median over pairs of the per-pair median, and
the mean of per-pair means, which punishes failures) on pairs drawn evenly from each train category.
"""

from __future__ import annotations

import argparse
import dataclasses
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np

from benchmarks.accuracy import pair_seed
from benchmarks.metrics import end_point_error
from benchmarks.pairs import PairRecord, load_aligned_pair, read_pairs
from benchmarks.warps import benchmark_warp, inside_mask, invert_warp
from models.classical.features import cfog, mind_ssc
from models.classical.register import WindowConfig, register_windows
from models.preprocess import to_gray
from models.warp import warp_image

DESCRIPTORS = {
    "cfog": partial(cfog, orientations=9, sigma=0.8),
    "cfog-6": partial(cfog, orientations=6, sigma=0.8),
    "cfog-s1.5": partial(cfog, orientations=9, sigma=1.5),
    "mind": partial(mind_ssc, radius=1, dilation=2),
    "mind-d1": partial(mind_ssc, radius=1, dilation=1),
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


def score(record: PairRecord, settings: list[tuple[str, str, dict]]) -> list[tuple[float, float]]:
    """(median, mean) EPE of every (name, descriptor, options) setting on one pair."""
    pair = load_aligned_pair(record)
    warp = benchmark_warp(pair.fixed.shape[-2:], pair_seed(0, record.pair_id))
    truth = invert_warp(warp)
    inside = inside_mask(truth)
    fixed = to_gray(pair.fixed, pair.fixed_modality)
    moving = to_gray(warp_image(pair.moving, warp), pair.moving_modality)
    out = []
    for _, descriptor, options in settings:
        field, _ = register_windows(fixed, moving, DESCRIPTORS[descriptor], WindowConfig(**options))
        epe = end_point_error(field, truth)[inside]
        out.append((float(np.median(epe)), float(epe.mean())))
    return out


def settings_for(descriptor: str) -> list[tuple[str, str, dict]]:
    base = [(f"{descriptor} defaults", descriptor, {})]
    variants = [
        (f"{descriptor} {key}={value}", descriptor, {key: value})
        for key, values in GRID.items() for value in values
    ]
    extra = [(f"{name} defaults", name, {}) for name in DESCRIPTORS if name.startswith(descriptor + "-")]
    return base + variants + extra


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/pairs")
    parser.add_argument("--per-category", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--descriptor", default="cfog", choices=("cfog", "mind"))
    args = parser.parse_args()
    records = pick_pairs(args.pairs, args.per_category)
    settings = settings_for(args.descriptor)
    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(pool.map(partial(score, settings=settings), records))
    scores = np.array(rows)  # (pairs, settings, 2)
    defaults = WindowConfig()
    print(f"{len(records)} train pairs; defaults {dataclasses.asdict(defaults)}")
    print("| setting | median EPE | mean EPE | pairs < 2 px |")
    print("|---|---|---|---|")
    for k, (name, _, _) in enumerate(settings):
        med, mean = scores[:, k, 0], scores[:, k, 1]
        print(f"| {name} | {np.median(med):.2f} | {np.mean(mean):.2f} | {np.mean(med < 2):.0%} |")


if __name__ == "__main__":
    main()
