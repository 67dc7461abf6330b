"""Radiometry-agnostic preprocessing shared by the methods."""

from __future__ import annotations

import numpy as np

from kernel.contracts import MODALITY


def to_gray(image: np.ndarray, modality: str) -> np.ndarray:
    """(C, H, W) float32 with NaN -> (H, W) float32 in about [0, 1], NaN kept.

    SAR in linear power is log-compressed (a dB image is left as it is: its range is already
    compressed); every modality is then robustly stretched between its 1st and 99th percentiles so
    that reflectance, dB, 8-bit and elevation look alike to a method.
    """
    gray = _band_mean(image) if image.shape[0] > 1 else image[0].copy()
    valid = np.isfinite(gray)
    if MODALITY[modality].backscatter and valid.any() and np.nanmin(gray) >= 0 and np.nanmedian(gray) < 1.0:
        gray = np.where(valid, 10.0 * np.log10(np.maximum(gray, 1e-6)), np.nan).astype(np.float32)
    if not valid.any():
        return gray.astype(np.float32)
    lo, hi = np.percentile(gray[valid], [1.0, 99.0])
    scale = hi - lo if hi > lo else 1.0
    return np.clip((gray - lo) / scale, 0.0, 1.0).astype(np.float32)


def _band_mean(image: np.ndarray) -> np.ndarray:
    """Mean over bands of the finite values; NaN where no band is finite (quietly, unlike nanmean)."""
    finite = np.isfinite(image)
    count = finite.sum(axis=0)
    total = np.where(finite, image, 0.0).sum(axis=0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan).astype(np.float32)
