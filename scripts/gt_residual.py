"""How far each method finds a category's pairs from aligned where their ground truth says they are aligned.

Usage: .venv/bin/python scripts/gt_residual.py [--pairs ../shared/data/pairs] [--split eval] \
           [--category optical-sar] [--methods dsmar,mind,cfog] [--border 32]
Each usable pair is registered as its ground truth aligns it, with no benchmark warp. A perfect truth and a
perfect method give zero; the median length of each method's field, and of the difference between the first
two methods' fields, show how much the dense track's EPE on that pair can separate, beside the ground truth's
own stated accuracy (`pairs.csv`'s `accuracy_px`). Prints a Markdown table (docs/dsmar.md, "Not done / next").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from datagen.pairs import doubtful_ground_truth, load_aligned_pair, read_pairs  # noqa: E402
from models import register_pair  # noqa: E402


def median_length(field: np.ndarray) -> float:
    return float(np.nanmedian(np.hypot(field[0], field[1])))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default=str(REPO.parent / "shared" / "data" / "pairs"))
    parser.add_argument("--split", default="eval")
    parser.add_argument("--category", default="optical-sar")
    parser.add_argument("--methods", default="dsmar,mind,cfog")
    parser.add_argument("--border", type=int, default=32, help="px left out at each side (the fields' edges)")
    args = parser.parse_args()
    methods = args.methods.split(",")
    inner = (slice(None), slice(args.border, -args.border), slice(args.border, -args.border))
    records = [
        r
        for r in read_pairs(Path(args.pairs), args.split)
        if r.category == args.category and doubtful_ground_truth(r) is None
    ]
    print(f"| pair | truth accurate to (px) | {' | '.join(methods)} | {methods[0]} against {methods[1]} |")
    print("|---" * (len(methods) + 3) + "|")
    for record in records:
        pair = load_aligned_pair(record)
        fields = {
            m: np.asarray(
                register_pair(pair.fixed, pair.moving, pair.fixed_modality, pair.moving_modality, method=m).displacement
            )[inner]
            for m in methods
        }
        lengths = " | ".join(f"{median_length(f):.2f}" for f in fields.values())
        apart = median_length(fields[methods[0]] - fields[methods[1]])
        print(f"| {record.pair_id} | {record.accuracy_px:g} | {lengths} | {apart:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
