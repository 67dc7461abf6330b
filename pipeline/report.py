"""The run report: quicklook PNGs (before/after checkerboards, fields, confidence, error vs truth) and
report.md. Thumbnails come from the chunk tasks (every `step`-th pixel), so the report never rereads
the cube at full resolution; only the error against truth is measured at full resolution.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kernel.contracts import MODALITY, REFERENCE, REGISTERED
from kernel.field_metrics import end_point_error
from pipeline.register_tiles import ChunkResult

THUMB_MAX = 768  # longest side of a quicklook, in pixels


def thumb_step(shape: tuple[int, int], longest: int = THUMB_MAX) -> int:
    return max(1, math.ceil(max(shape) / longest))


def assemble(results: Iterable[ChunkResult], shape: tuple[int, int], step: int) -> dict[str, np.ndarray]:
    """Mosaic the chunks' thumbnails into whole-grid quicklooks (NaN where a chunk was skipped)."""
    out_shape = (math.ceil(shape[0] / step), math.ceil(shape[1] / step))
    mosaics: dict[str, np.ndarray] = {}
    for result in results:
        core = result.tile.core
        r, c = math.ceil(core.row / step), math.ceil(core.col / step)
        for name, thumb in result.thumbnails.items():
            if name not in mosaics:
                mosaics[name] = np.full((*thumb.shape[:-2], *out_shape), np.nan, np.float32)
            mosaics[name][..., r : r + thumb.shape[-2], c : c + thumb.shape[-1]] = thumb
    return mosaics


@dataclass(frozen=True)
class ErrorStats:
    median: float
    mean: float
    p90: float

    @classmethod
    def of(cls, epe: np.ndarray) -> ErrorStats | None:
        valid = epe[np.isfinite(epe)]
        if valid.size == 0:
            return None
        return cls(float(np.median(valid)), float(valid.mean()), float(np.percentile(valid, 90)))


@dataclass(frozen=True)
class TimeReport:
    """What the report shows for one time step (one scene set)."""

    label: str  # e.g. "2024-05-01"
    items: Mapping[str, str]  # "optical"/"sar"/"dem" -> item ids
    tiles_written: int
    tiles_skipped: int
    quicklooks: Mapping[str, np.ndarray] = field(default_factory=dict)
    errors: Mapping[str, ErrorStats | None] = field(default_factory=dict)  # modality -> error vs truth
    truth: Mapping[str, np.ndarray] = field(default_factory=dict)  # modality -> decimated truth (2, h, w)
    unregistered: Mapping[str, ErrorStats | None] = field(default_factory=dict)  # modality -> the input's own error


def _normalise(image: np.ndarray) -> np.ndarray:
    """One band in [0, 1] by its 2-98 percentiles (the first band of a stack; dB and metres alike)."""
    band = np.asarray(image, np.float32)
    if band.ndim == 3:
        band = band.mean(axis=0)  # NaN where any band is missing: those pixels are not shown
    finite = band[np.isfinite(band)]
    if finite.size == 0:
        return np.zeros_like(band)
    lo, hi = np.percentile(finite, [2, 98])
    return np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)


def hillshade(dem: np.ndarray) -> np.ndarray:
    """A unit-free hillshade: the DEM looks like the optical shading it explains, so a checkerboard shows offsets."""
    band = np.asarray(dem, np.float32)[0] if np.ndim(dem) == 3 else np.asarray(dem, np.float32)
    gy, gx = np.gradient(np.nan_to_num(band, nan=float(np.nanmean(band)) if np.isfinite(band).any() else 0.0))
    scale = np.nanpercentile(np.hypot(gx, gy), 95) or 1.0
    shade = (-gx - gy) / scale
    return np.where(np.isfinite(band), shade, np.nan)


def checkerboard(a: np.ndarray, b: np.ndarray, squares: int = 8) -> np.ndarray:
    """Alternate squares of two [0, 1] images: misregistration shows as broken edges at square borders."""
    h, w = a.shape
    size = max(1, max(h, w) // squares)
    yy, xx = np.indices((h, w))
    return np.where(((yy // size) + (xx // size)) % 2 == 0, a, b)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    for ax in fig.axes:
        if ax.images:  # colorbars have no images and keep their ticks
            ax.set_axis_off()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _save_checkerboards(
    path: Path, optical: np.ndarray, before: np.ndarray, after: np.ndarray, title: str, elevation: bool
) -> None:
    import matplotlib.pyplot as plt

    prep = (lambda x: _normalise(hillshade(x))) if elevation else _normalise
    ref = _normalise(optical)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.6), constrained_layout=True)
    for ax, moving, label in ((axes[0], before, "before"), (axes[1], after, "after")):
        ax.imshow(checkerboard(ref, prep(moving)), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{title}: optical vs {label}")
    _save(fig, path)


def _save_field(path: Path, displacement: np.ndarray, confidence: np.ndarray, step: int, title: str) -> None:
    import matplotlib.pyplot as plt

    magnitude = np.hypot(displacement[0], displacement[1])
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), constrained_layout=True)
    im = axes[0].imshow(magnitude, cmap="viridis")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="|d| (optical pixels)")
    stride = max(1, max(magnitude.shape) // 24)
    yy, xx = np.mgrid[0 : magnitude.shape[0] : stride, 0 : magnitude.shape[1] : stride]
    # Arrows point to where each optical pixel found its match in the original image (Contract 1);
    # a field that is zero (or NaN) everywhere has none to draw, and matplotlib cannot scale it.
    if np.nanmax(magnitude, initial=0.0) > 0:
        axes[0].quiver(xx, yy, displacement[1][::stride, ::stride], -displacement[0][::stride, ::stride], color="white")
    axes[0].set_title(f"{title}: displacement (quicklook every {step} px)")
    im = axes[1].imshow(confidence, cmap="magma", vmin=0, vmax=1)
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="confidence")
    axes[1].set_title(f"{title}: confidence")
    _save(fig, path)


def _save_error(path: Path, displacement: np.ndarray, truth: np.ndarray, title: str) -> None:
    import matplotlib.pyplot as plt

    error = end_point_error(displacement, truth)
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), constrained_layout=True)
    im = axes[0].imshow(np.hypot(truth[0], truth[1]), cmap="viridis")
    fig.colorbar(im, ax=axes[0], shrink=0.8, label="|truth| (pixels)")
    axes[0].set_title(f"{title}: injected truth")
    im = axes[1].imshow(
        error,
        cmap="inferno",
        vmin=0,
        vmax=max(2.0, float(np.nanpercentile(error, 99)) if np.isfinite(error).any() else 2.0),
    )
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="end-point error (pixels)")
    axes[1].set_title(f"{title}: error of the recovered field")
    _save(fig, path)


def write_report(
    directory: Path,
    times: Sequence[TimeReport],
    *,
    title: str,
    cube: str,
    method: str,
    summary_lines: Sequence[str],
    step: int,
) -> Path:
    """Write quicklooks and report.md into `directory`; return the report's path."""
    import matplotlib

    matplotlib.use("Agg")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"# {title}", "", f"Cube: `{cube}`  ", f"Method: `{method}`", "", *summary_lines, ""]
    for n, time in enumerate(times):
        q = time.quicklooks
        lines += [f"## {time.label}", ""]
        lines += [f"- {name}: `{item}`" for name, item in time.items.items()]
        lines += [f"- tiles written: {time.tiles_written}, skipped (already up to date): {time.tiles_skipped}", ""]
        for modality in REGISTERED:
            if MODALITY[modality].displacement_var not in q:
                continue
            stem = f"t{n:02d}_{modality}"
            _save_checkerboards(
                directory / f"{stem}_checkerboard.png",
                q[REFERENCE],
                q[f"{modality}_before"],
                q[modality],
                modality.upper(),
                elevation=MODALITY[modality].elevation,
            )
            _save_field(
                directory / f"{stem}_field.png",
                q[MODALITY[modality].displacement_var],
                q[MODALITY[modality].confidence_var],
                step,
                modality.upper(),
            )
            lines += [
                f"### {modality.upper()}",
                "",
                f"![{modality} before/after]({stem}_checkerboard.png)",
                "",
                f"![{modality} displacement and confidence]({stem}_field.png)",
                "",
            ]
            stats = time.errors.get(modality)
            if modality in time.truth:
                _save_error(
                    directory / f"{stem}_error.png",
                    q[MODALITY[modality].displacement_var],
                    time.truth[modality],
                    modality.upper(),
                )
                lines += [f"![{modality} error vs truth]({stem}_error.png)", ""]
            before = time.unregistered.get(modality)
            if before is not None:
                lines += [
                    f"Geolocation error vs injected truth before registration: median {before.median:.3f} px, "
                    f"mean {before.mean:.3f} px, 90th percentile {before.p90:.3f} px",
                    "",
                ]
            if stats is not None:
                lines += [
                    f"End-point error vs injected truth: median {stats.median:.3f} px, "
                    f"mean {stats.mean:.3f} px, 90th percentile {stats.p90:.3f} px",
                    "",
                ]
    path = directory / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path
