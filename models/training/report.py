"""A training run's report, `OUT/report.md` beside its weights: the stages with their held-out scores, the loss curve
(`curve.png`) and held-out crops registered by the run's weights (`held_out.png`), where a pixel or two of
misalignment shows as broken edges at the checkerboard's square borders."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.report_figures import checkerboard, figure, save_figure

# The curve's loss terms, as the log names them.
CURVE_TERMS = ("total", "epe")
# The error map's colour range (px): the held-out median is around 3 px.
ERROR_RANGE_PX = 6.0


@dataclass(frozen=True)
class HeldOutCrop:
    """One held-out crop: the fixed image, the moving one under the crop's warp and moved back by the run's field
    (all [0, 1], 0 where a stream has no data), and the end-point error of that field (px, NaN where the truth is
    undefined)."""

    fixed: np.ndarray
    before: np.ndarray
    after: np.ndarray
    error: np.ndarray


def save_curve(path: Path, curve: list[dict], history: list[dict]) -> None:
    """The running losses against the run's step, with the held-out median EPE at each stage's end (the run's step
    there: `total_steps`, which skipped batches do not advance)."""
    fig, axes = figure(1, 1, (8, 4))
    ax = axes[0, 0]
    for term in CURVE_TERMS:
        points = [(c["total_steps"], c[term]) for c in curve if term in c]
        if points:
            ax.plot(*zip(*points, strict=True), marker=".", label=f"train {term} (running mean)")
    ends = [h.get("total_steps", end) for h, end in zip(history, np.cumsum([h["steps"] for h in history]), strict=True)]
    scored = [(end, h["val_epe_median"]) for end, h in zip(ends, history, strict=True) if "val_epe_median" in h]
    if scored:
        ax.plot(*zip(*scored, strict=True), "o", color="black", label="held-out median EPE (stage end)")
    for end, h in zip(ends, history, strict=True):
        ax.axvline(end, color="grey", lw=0.5)
        ax.annotate(h["stage"], (end, 1), xycoords=("data", "axes fraction"), ha="right", va="top", fontsize=8)
    ax.set_xlabel("step")
    ax.set_ylabel("px (loss: weighted px)")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    save_figure(fig, path, dpi=80)


def save_held_out(path: Path, crops: list[HeldOutCrop]) -> None:
    """Per crop: checkerboards of the fixed image with the moving one before and after the run's field, and the
    field's end-point error."""
    fig, axes = figure(len(crops), 3, (10, 3.4 * len(crops)))
    for row, crop in zip(axes, crops, strict=True):
        for ax, moving, label in ((row[0], crop.before, "before"), (row[1], crop.after, "after")):
            ax.imshow(np.nan_to_num(checkerboard(crop.fixed, moving), nan=0.0), cmap="gray", vmin=0, vmax=1)
            ax.set_title(f"fixed vs moving, {label}", fontsize=9)
        shown = row[2].imshow(crop.error, cmap="magma", vmin=0, vmax=ERROR_RANGE_PX)
        defined = crop.error[np.isfinite(crop.error)]
        median = f"median {np.median(defined):.2f} px" if defined.size else "no truth"
        row[2].set_title(f"end-point error, {median}", fontsize=9)
        fig.colorbar(shown, ax=row[2], shrink=0.8, label="px")
    save_figure(fig, path, dpi=80)


def _number(value, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, float) else "-"


def markdown(name: str, record: dict, weights_sha256: str, held_out: bool) -> str:
    """The report's text: what ran on what, and each stage's steps, time and held-out scores; `held_out`: with the
    figure of held-out crops (a pack without held-out pairs has none)."""
    config = record["config"]
    lines = [
        f"# Training run `{name}`",
        "",
        f"- Device: {record['device_name']} (torch {record['torch']}); seed {record['seed']}; "
        f"batch {config['batch']} crops of {config['crop']} px; {record['parameters']:,} parameters",
        f"- Pack `{record['data_sha256'][:12]}`: {record['train_pairs']} train / {record['val_pairs']} held-out pairs",
        f"- Started from: {config['init'] or 'random weights'}; moving average of the weights: "
        f"{config['ema'] or 'none'}",
        f"- Weights: `{name}.pt`, sha256 `{weights_sha256[:12]}`, {record['total_steps']:,} steps "
        f"({record['total_steps'] * config['batch']:,} crops){'' if record['finished'] else ', not finished'}",
        "",
        "| stage | steps | seconds | lr | held-out median / mean EPE (px) | under 1 px | folded |",
        "|---|---|---|---|---|---|---|",
    ]
    for h in record["history"]:
        lines.append(
            f"| {h['stage']} | {h['steps']:,} | {h['seconds']:,.0f} | {h['lr']:g} | "
            f"{_number(h.get('val_epe_median'), 3)} / {_number(h.get('val_epe_mean'), 3)} | "
            f"{_number(100 * h['val_under_1px'] if 'val_under_1px' in h else None, 1)} % | "
            f"{_number(100 * h['val_folded'] if 'val_folded' in h else None, 3)} % |"
        )
    lines += ["", "![loss curve](curve.png)", ""]
    if held_out:
        lines += [
            "Held-out crops registered by these weights (the moving image under the crop's warp, then moved back by "
            "the predicted field):",
            "",
            "![held-out crops](held_out.png)",
            "",
        ]
    return "\n".join(lines)


def write_report(
    out: Path, name: str, record: dict, weights_sha256: str, curve: list[dict], crops: list[HeldOutCrop]
) -> Path:
    """OUT/report.md with its figures (the held-out crops where there are any). Each file is written under a
    temporary name and then replaces the last one whole, so a reader never sees half of one; a failure leaves the
    last complete report and no temporary file."""
    parts = {out / "curve.png": lambda path: save_curve(path, curve, record["history"])}
    if crops:
        parts[out / "held_out.png"] = lambda path: save_held_out(path, crops)
    parts[out / "report.md"] = lambda path: path.write_text(markdown(name, record, weights_sha256, bool(crops)))
    written = []
    try:
        for final, write in parts.items():
            write(final.with_name(f".{final.name}.tmp"))
            written.append(final)
        for final in written:
            final.with_name(f".{final.name}.tmp").replace(final)
    finally:
        for final in parts:
            final.with_name(f".{final.name}.tmp").unlink(missing_ok=True)
    return out / "report.md"
