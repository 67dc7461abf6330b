"""The report's figures: before/after checkerboards, zoomed crops with the reference's edges, displacement and
confidence quicklooks, the confidence histogram and the error against truth. One PNG per call; matplotlib
(Agg) is imported only here, when a figure is drawn."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from kernel.field_metrics import end_point_error

EDGE_COLOUR = (1.0, 0.15, 0.1)  # the reference's edges over the moving image in the crops


def normalise(image: np.ndarray) -> np.ndarray:
    """One band in [0, 1] by its 2-98 percentiles (the first band of a stack; dB and metres alike)."""
    band = np.asarray(image, np.float32)
    if band.ndim == 3:
        band = band.mean(axis=0)  # NaN where any band is missing: those pixels are not shown
    finite = band[np.isfinite(band)]
    if finite.size == 0:
        return band
    lo, hi = np.percentile(finite, [2, 98])
    return np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)


def hillshade(dem: np.ndarray) -> np.ndarray:
    """A unit-free hillshade: the DEM looks like the optical shading it explains, so a checkerboard shows offsets."""
    band = np.asarray(dem, np.float32)[0] if np.ndim(dem) == 3 else np.asarray(dem, np.float32)
    gy, gx = np.gradient(np.nan_to_num(band, nan=float(np.nanmean(band)) if np.isfinite(band).any() else 0.0))
    scale = np.nanpercentile(np.hypot(gx, gy), 95) or 1.0
    shade = (-gx - gy) / scale
    return np.where(np.isfinite(band), shade, np.nan)


def display(image: np.ndarray, elevation: bool) -> np.ndarray:
    """One [0, 1] band that looks like the optical reference: a hillshade for elevation, the bands' mean else."""
    return normalise(hillshade(image)) if elevation else normalise(image)


def checkerboard(a: np.ndarray, b: np.ndarray, squares: int = 8, size_px: int | None = None) -> np.ndarray:
    """Alternate squares of two [0, 1] images: misregistration shows as broken edges at square borders. `squares`
    along the longer side, or squares of `size_px`."""
    h, w = a.shape
    size = size_px or max(1, max(h, w) // squares)
    yy, xx = np.indices((h, w))
    return np.where(((yy // size) + (xx // size)) % 2 == 0, a, b)


def edges(gray: np.ndarray) -> np.ndarray:
    """The strongest one-pixel Canny edges of a [0, 1] band (NaN as its mean): thin enough to show a 2 px offset,
    few enough to leave the image under them visible."""
    from skimage.feature import canny

    valid = np.isfinite(gray)
    filled = np.where(valid, gray, gray[valid].mean() if valid.any() else 0.0)
    return canny(filled, sigma=2.0, low_threshold=0.6, high_threshold=0.8, use_quantiles=True) & valid


def figure(rows: int, cols: int, size: tuple[float, float]):
    """A figure of rows x cols axes (always a 2-D array) on matplotlib's Agg backend, imported only when drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=size, constrained_layout=True, squeeze=False)


def save_figure(fig, path: Path, dpi: int = 90) -> None:
    """`fig` as a PNG at `path`, its image axes without ticks; the figure is closed whatever happens."""
    import matplotlib.pyplot as plt

    try:
        for ax in fig.axes:
            if ax.images:  # colorbars and histograms have no images and keep their ticks
                ax.set_axis_off()
        fig.savefig(path, dpi=dpi, format="png")
    finally:
        plt.close(fig)


def save_checkerboards(path: Path, reference: np.ndarray, before: np.ndarray, after: np.ndarray, title: str) -> None:
    """Checkerboards of the reference with the moving image before and after registration ([0, 1] bands)."""
    fig, axes = figure(1, 2, (11, 5.6))
    for ax, moving, label in ((axes[0, 0], before, "before"), (axes[0, 1], after, "after")):
        ax.imshow(checkerboard(reference, moving), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{title}: optical vs {label}")
    save_figure(fig, path)


def save_crops(path: Path, crops: Sequence, title: str) -> None:
    """Each crop at full resolution, before and after, with the reference's edges drawn over the moving image."""
    fig, axes = figure(len(crops), 2, (9, 4.4 * len(crops)))
    for row, crop in zip(axes, crops):
        outline = edges(crop.reference)
        overlay = np.zeros((*outline.shape, 4), np.float32)
        overlay[outline] = (*EDGE_COLOUR, 1.0)
        for ax, moving, label in ((row[0], crop.before, "before"), (row[1], crop.after, "after")):
            ax.imshow(moving, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.imshow(overlay, interpolation="nearest")
            w = crop.window
            ax.set_title(f"{title} {label}: rows {w.row}-{w.row + w.height}, cols {w.col}-{w.col + w.width}")
    save_figure(fig, path)


def save_field(path: Path, displacement: np.ndarray, confidence: np.ndarray, step: int, title: str) -> None:
    fig, axes = figure(1, 2, (11, 5.2))
    magnitude = np.hypot(displacement[0], displacement[1])
    im = axes[0, 0].imshow(magnitude, cmap="viridis")
    fig.colorbar(im, ax=axes[0, 0], shrink=0.8, label="|d| (optical pixels)")
    stride = max(1, max(magnitude.shape) // 24)
    yy, xx = np.mgrid[0 : magnitude.shape[0] : stride, 0 : magnitude.shape[1] : stride]
    # Arrows point to where each optical pixel found its match in the original image (Contract 1);
    # a field that is zero (or NaN) everywhere has none to draw, and matplotlib cannot scale it.
    if np.nanmax(magnitude, initial=0.0) > 0:
        axes[0, 0].quiver(
            xx, yy, displacement[1][::stride, ::stride], -displacement[0][::stride, ::stride], color="white"
        )
    axes[0, 0].set_title(f"{title}: displacement (quicklook every {step} px)")
    im = axes[0, 1].imshow(confidence, cmap="magma", vmin=0, vmax=1)
    fig.colorbar(im, ax=axes[0, 1], shrink=0.8, label="confidence")
    axes[0, 1].set_title(f"{title}: confidence")
    save_figure(fig, path)


def save_confidence_histogram(path: Path, confidence: np.ndarray, title: str) -> None:
    fig, axes = figure(1, 1, (6, 3.2))
    values = confidence[np.isfinite(confidence)]
    axes[0, 0].hist(values, bins=20, range=(0, 1), color="tab:purple")
    axes[0, 0].set_xlabel("confidence")
    axes[0, 0].set_ylabel("quicklook pixels")
    axes[0, 0].set_title(f"{title}: confidence distribution")
    save_figure(fig, path)


def save_error(path: Path, displacement: np.ndarray, truth: np.ndarray, title: str) -> None:
    fig, axes = figure(1, 2, (11, 5.2))
    error = end_point_error(displacement, truth)
    im = axes[0, 0].imshow(np.hypot(truth[0], truth[1]), cmap="viridis")
    fig.colorbar(im, ax=axes[0, 0], shrink=0.8, label="|truth| (pixels)")
    axes[0, 0].set_title(f"{title}: injected truth")
    im = axes[0, 1].imshow(
        error,
        cmap="inferno",
        vmin=0,
        vmax=max(2.0, float(np.nanpercentile(error, 99)) if np.isfinite(error).any() else 2.0),
    )
    fig.colorbar(im, ax=axes[0, 1], shrink=0.8, label="end-point error (pixels)")
    axes[0, 1].set_title(f"{title}: error of the recovered field")
    save_figure(fig, path)
