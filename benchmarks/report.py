"""Tables, figures and docs from a benchmark result (benchmarks.accuracy.run_benchmark)."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy import HIST_EDGES, pair_seed, register_spec
from benchmarks.metrics import THRESHOLDS
from benchmarks.results import BenchResult, DenseTable, LandmarkTable, Summary
from datagen.pairs import load_aligned_pair, read_pairs
from datagen.warps import benchmark_warp
from kernel.warp import warp_image
from pipeline.report_figures import checkerboard

# The side of a checkerboard square (px) on the pairs (a few hundred px a side): a few px of offset show at its edges.
CHECKER_SQUARE_PX = 32

# (label, value of a summary, format) per table column.
Column = tuple[str, Callable[[Any], Any], str]
DENSE_COLUMNS: tuple[Column, ...] = (
    ("pairs", attrgetter("pairs"), "{:d}"),
    ("failed", attrgetter("failed"), "{:d}"),
    ("EPE mean", attrgetter("epe_mean"), "{:.2f}"),
    ("EPE median", attrgetter("epe_median"), "{:.2f}"),
    *((f"px<{t:g}", lambda s, t=t: s.pixels_under.get(t), "{:.0%}") for t in THRESHOLDS),
    *((f"pairs<{t:g}", lambda s, t=t: s.pairs_under.get(t), "{:.0%}") for t in THRESHOLDS),
    ("recovery median", attrgetter("recovery_median"), "{:.2f}"),
    ("folded", attrgetter("folding"), "{:.2%}"),
    ("s/MP", attrgetter("seconds_per_mp"), "{:.2f}"),
)
USABLE_CATEGORY_COLUMNS: tuple[Column, ...] = (
    ("pairs", attrgetter("pairs"), "{:d}"),
    ("failed", attrgetter("failed"), "{:d}"),
    ("EPE median", attrgetter("epe_median"), "{:.2f}"),
    ("EPE mean", attrgetter("epe_mean"), "{:.2f}"),
    ("pairs<2", lambda s: s.pairs_under.get(2.0), "{:.0%}"),
    ("recovery median", attrgetter("recovery_median"), "{:.2f}"),
)
LANDMARK_COLUMNS: tuple[Column, ...] = (
    ("pairs", attrgetter("pairs"), "{:d}"),
    ("failed", attrgetter("failed"), "{:d}"),
    ("median px", attrgetter("median"), "{:.1f}"),
    ("mean px", attrgetter("mean"), "{:.1f}"),
    ("pairs<3", lambda s: s.pairs_under.get(3.0), "{:.0%}"),
)


def _cell(value, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def overall_table(
    table: DenseTable | LandmarkTable, columns: tuple[Column, ...] = DENSE_COLUMNS, group: str = "overall"
) -> str:
    """Methods as rows, `columns` of one group of the table ("overall" or a category)."""
    rows = [
        [method] + [_cell(value(stats[group]), fmt) for _, value, fmt in columns] for method, stats in table.items()
    ]
    return markdown_table(["method"] + [label for label, _, _ in columns], rows)


def category_table(table: DenseTable | LandmarkTable, value: Callable[[Any], Any], fmt: str) -> str:
    """Categories as rows, methods as columns, one statistic per cell."""
    methods = list(table)
    if not methods:
        return ""
    categories = [c for c in table[methods[0]] if c != "overall"] + ["overall"]
    rows = [
        [f"{cat} ({table[methods[0]][cat].pairs})"] + [_cell(value(table[m][cat]), fmt) for m in methods]
        for cat in categories
    ]
    return markdown_table(["category (pairs)"] + methods, rows)


def tables(result: BenchResult) -> str:
    """The whole result as markdown tables (also what the terminal shows)."""
    dense, marks = result.summary.dense, result.summary.landmarks
    parts = [
        "### Dense track, overall (EPE in px against the known warp on aligned pairs)",
        overall_table(dense),
    ]
    gpu = result.gpu_speed
    if gpu:
        method = gpu.get("method_mp_per_s")
        whole = (
            f"; the whole method with its defaults: {method:.1f} MP/s" if method else " (the network's forward pass)"
        )
        parts.append(
            f"dsmar on a GPU ({gpu['gpu']}, {gpu['size']} x {gpu['size']} px, fp32, measured by "
            f"`python -m models.training.throughput` with these weights): {gpu['s_per_mp_fp32']:.3f} s/MP{whole}."
        )
    parts += usable_section(result)
    parts += [
        "### Dense track, median EPE (px) per category",
        category_table(dense, attrgetter("epe_median"), "{:.2f}"),
        "### Warp recovery, median |d1(p) + w(p + d1(p)) - d0(p)| (px) per category",
        category_table(dense, attrgetter("recovery_median"), "{:.2f}"),
        "### Dense track, share of pairs with median EPE under 2 px, per category",
        category_table(dense, lambda s: s.pairs_under.get(2.0), "{:.0%}"),
    ]
    if marks:
        parts += [
            "### Landmark track (original pairs, median landmark error per pair; moving padded/cropped "
            "to the fixed size, no ground truth used)",
            overall_table(marks, LANDMARK_COLUMNS),
            "### Landmark track, median landmark error (px) per category",
            category_table(marks, attrgetter("median"), "{:.1f}"),
        ]
    verdict = verdict_lines(result.summary)
    if verdict:
        parts += ["### Verdict (generated)", verdict]
    failures = [
        f"- {track} {case.pair_id}: " + "; ".join(case.failures())
        for track, cases in result.cases.items()
        for case in cases
        if case.failures()
    ]
    if failures:
        parts += ["### Failures", "\n".join(failures)]
    excluded = result.excluded
    if excluded:
        parts += [
            f"### Excluded: {len(excluded)} pairs with an error in the data (not scored)",
            "\n".join(f"- {pair_id}: {reason}" for pair_id, reason in sorted(excluded.items())),
        ]
    return "\n\n".join(parts)


def usable_section(result: BenchResult) -> list[str]:
    """The dense track without the pairs set aside for a ground truth known not to align them (the scores to
    compare methods on): overall, and for each category they came from; [] when none was set aside."""
    usable = result.summary.dense_usable
    if not usable:
        return []
    dense_ids = {c.pair_id for c in result.cases["dense"]}
    labels = Counter(reason.partition(":")[0] for pid, reason in result.set_aside.items() if pid in dense_ids)
    first = next(iter(usable.values()))
    parts = [
        f"### Dense track on the {first['overall'].pairs} pairs with a usable ground truth (the "
        + " and ".join(f"{n} {label}" for label, n in sorted(labels.items()))
        + " pairs set aside, see Known data problem in benchmarks/tuning.md)",
        overall_table(usable),
        "These are the scores to compare methods on: on the pairs set aside the ground truth itself leaves "
        "the images misaligned, so every method, identity included, scores about alike there "
        "(the pairs and the reason: `set_aside` in results.json).",
    ]
    for category in (c for c in first if c != "overall"):
        parts += [
            f"#### {category} on its {first[category].pairs} pairs with a usable ground truth",
            overall_table(usable, USABLE_CATEGORY_COLUMNS, category),
        ]
    return parts


def verdict_lines(summary: Summary, ratio: float = 0.5) -> str:
    """Per category, whether the best method recovers the warp clearly better than identity (its median
    warp-recovery error at most `ratio` times identity's), said plainly either way."""
    dense = summary.dense
    method = best_method(summary)
    if method is None or "identity" not in dense:
        return ""
    lines = []
    for category, stats in dense[method].items():
        ours, base = stats.recovery_median, dense["identity"][category].recovery_median
        if ours is None or base is None:
            continue
        clearly = ours <= ratio * base
        lines.append(
            f"- {category}: `{method}` recovers the warp to {ours:.2f} px median against identity's {base:.2f} px"
            + (" - clearly better." if clearly else f" - NOT clearly better (more than {ratio:.0%} of identity's).")
        )
    basis = "on the pairs with a usable ground truth" if summary.dense_usable else "overall"
    return f"Best method by median EPE {basis}: `{method}`.\n" + "\n".join(lines)


def best_method(summary: Summary) -> str | None:
    """The non-identity method with the lowest overall median EPE on the dense track, counting only the
    pairs with a usable ground truth where some were set aside (elsewhere every method scores alike)."""
    dense = summary.dense_usable or summary.dense
    ranked = [
        (epe, m) for m, stats in dense.items() if m != "identity" and (epe := stats["overall"].epe_median) is not None
    ]
    return min(ranked)[1] if ranked else None


def _cdf_figure(result: BenchResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    edges = HIST_EDGES[:-1]
    for method in result.config.methods:
        scored = [s for c in result.cases["dense"] if (s := c.dense(method)) is not None]
        if not scored:
            continue
        hist = np.sum([s.epe_hist for s in scored], axis=0)
        cdf = np.cumsum(hist) / max(hist.sum(), 1)
        axes[0].plot(edges + np.diff(HIST_EDGES)[0], cdf, label=method)
        axes[1].hist(
            np.clip([s.epe.median for s in scored], 0, 20), bins=40, range=(0, 20), histtype="step", label=method
        )
    axes[0].set(xlim=(0, 10), xlabel="end-point error (px)", ylabel="share of pixels", title="EPE, all pixels")
    axes[1].set(xlabel="median EPE per pair (px, clipped at 20)", ylabel="pairs", title="EPE per pair")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:  # every method failed: no curves to name
            ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _checkerboard_figure(result: BenchResult, pair_id: str, method: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from models.preprocess import to_gray

    config = result.config
    record = next(r for r in read_pairs(config.pairs_dir, config.split) if r.pair_id == pair_id)
    pair = load_aligned_pair(record)
    warp = benchmark_warp(pair.fixed.shape[-2:], pair_seed(config.seed, pair_id))
    warped = warp_image(pair.moving, warp)
    registered = register_spec(method, pair.fixed, warped, pair.fixed_modality, pair.moving_modality)
    fixed = to_gray(pair.fixed, pair.fixed_modality)
    before = to_gray(warped, pair.moving_modality)
    after = to_gray(registered.warped, pair.moving_modality)
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, moving, title in ((axes[0], before, "before (warped moving)"), (axes[1], after, f"after {method}")):
        board = checkerboard(fixed, moving, size_px=CHECKER_SQUARE_PX)
        ax.imshow(np.nan_to_num(board, nan=0.0), cmap="gray", vmin=0, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"{pair_id} ({record.category})")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_report(result: BenchResult, out: Path) -> Path:
    """DIR/results.json, DIR/report.md and its PNG figures."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result.to_dict(), indent=1))
    _cdf_figure(result, out / "epe_distribution.png")
    lines = [
        "# Accuracy benchmark report",
        "",
        f"Split `{result.config.split}`, methods {', '.join(result.config.methods)}, "
        f"seed {result.config.seed}, {len(result.cases['dense'])} dense pairs, "
        f"{len(result.cases['landmarks'])} landmark pairs, {result.wall_seconds:.0f} s wall, "
        f"{result.cpu_seconds:.0f} s CPU.",
        "",
        tables(result),
        "",
        "## Error distributions",
        "",
        "![EPE distributions](epe_distribution.png)",
        "",
    ]
    method = best_method(result.summary)
    if method is not None:
        scored = [(s.epe.median, c.pair_id) for c in result.cases["dense"] if (s := c.dense(method)) is not None]
        scored.sort()
        picks = {"best": scored[:2], "worst": scored[-2:][::-1]}
        lines += [f"## Checkerboards of `{method}` (the best method here): best and worst pairs", ""]
        for label, chosen in picks.items():
            for epe, pair_id in chosen:
                name = f"checker_{label}_{pair_id}.png"
                _checkerboard_figure(result, pair_id, method, out / name)
                lines += [f"{label}: `{pair_id}`, median EPE {epe:.2f} px", "", f"![{pair_id}]({name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


PROTOCOL = """\
## Protocol
- Data: `../shared/data/pairs` (see its README.md), real optical vs SAR, infrared, map, LiDAR, night and
  rendered-depth pairs with ground truth. Never copied into the project.
- Pairs whose moving file is the fixed file (while the ground truth is not the identity) are a data
  error: they are excluded and listed under the results.
- **Dense track** (every other pair): the moving image is brought onto the fixed grid through the ground truth
  (`fixed_to_moving`) and both are cropped to the largest fully valid rectangle (SRIF's black rotation
  fill is no-data). The moving image is then deformed by a seeded smooth warp `w` (translation up to 8 px,
  rotation up to 2 degrees, scale up to 2 %, an elastic field of up to 3 px; `kernel.fields`):
  `moving_warped(q) = moving(q + w(q))`. The truth is `t` with `t(p) + w(p + t(p)) = 0` (fixed-point
  inversion). The method's field `d1` on (fixed, moving_warped) is scored where `p + t(p)` lies inside
  the image: end-point error (EPE); *EPE mean* is the mean over pairs of each pair's mean, *EPE median*
  the median over pairs of each pair's median; *px<k* the share of all scored pixels under k px;
  *pairs<k* the share of pairs whose median EPE is under k px (a failed pair counts as not under);
  *folded* the mean share of pixels whose Jacobian determinant of `p -> p + d1(p)` is <= 0; *s/MP* the
  method's seconds per megapixel through `register_pair` (single core, includes the API's own warp).
- **Warp recovery**: the ground truth itself is only 1-3 px accurate, which floors the EPE; the method's
  field `d0` on the unwarped aligned pair gives `|d1(p) + w(p + d1(p)) - d0(p)|`, how well the known warp
  is recovered whatever the ground truth's error (median over pairs of the per-pair median).
- **Landmark track** (pairs with manual landmarks): the original images, moving cropped or NaN-padded at
  the bottom/right to the fixed size (no ground truth used); the field is sampled at the fixed landmarks
  and compared with the moving landmarks. These pairs carry large scale and perspective differences that
  the dense methods are not built for: their failures are shown as they are.
- Every method runs through the same door, `models.register_pair(fixed, moving, fixed_modality,
  moving_modality, method=...)`, with its shipped defaults.
"""


def write_docs(result: BenchResult, path: Path, command: str, notes: str) -> None:
    """Regenerate docs/accuracy.md: protocol, the table, the baselines' settings and the rerun command."""
    config = result.config
    text = [
        "# Accuracy",
        "",
        "Generated by `dsmar bench accuracy`; do not edit by hand (the table is regenerated by the command).",
        "",
        PROTOCOL,
        f"## Results on split `{config.split}` (seed {config.seed}; "
        f"{len(result.cases['dense'])} dense pairs, {len(result.cases['landmarks'])} landmark pairs; "
        f"{result.wall_seconds:.0f} s wall with {config.workers} workers, "
        f"{result.cpu_seconds:.0f} s CPU in the workers)",
        "",
        tables(result),
        "",
        notes,
        "",
        "## Rerun",
        "",
        "```",
        command,
        "```",
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))


def load_result(path: Path) -> BenchResult:
    return BenchResult.from_dict(json.loads(Path(path).read_text()))
