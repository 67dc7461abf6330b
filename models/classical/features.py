"""Dense modality-robust descriptors: CFOG (oriented gradient channels) and MIND-SSC (self-similarity).

Both map a gray image (H, W) with NaN as no-data to a stack (C, H, W) whose channels compare well across
modalities with a plain sum of squared differences, which is what `matching.py` computes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def fill_nodata(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Replace NaN by the mean of the valid pixels; return (filled float32, valid mask)."""
    valid = np.isfinite(gray)
    fill = float(gray[valid].mean()) if valid.any() else 0.0
    return np.where(valid, gray, fill).astype(np.float32), valid


def cfog(gray: np.ndarray, orientations: int = 9, sigma: float = 0.8) -> np.ndarray:
    """CFOG (Ye et al. 2019): |gradient| projected on `orientations` directions in [0, pi),
    Gaussian-smoothed in space and by a [1, 2, 1] kernel across orientation, L2-normalised per pixel.

    The absolute projection makes the channels blind to contrast reversal between modalities.
    """
    image, _ = fill_nodata(gray)
    gy = ndimage.sobel(image, axis=0, mode="reflect")
    gx = ndimage.sobel(image, axis=1, mode="reflect")
    angles = np.arange(orientations) * np.pi / orientations
    channels = np.abs(np.cos(angles)[:, None, None] * gx + np.sin(angles)[:, None, None] * gy)
    channels = ndimage.gaussian_filter(channels, sigma=(0, sigma, sigma), mode="reflect")
    channels = ndimage.convolve1d(channels, np.array([1.0, 2.0, 1.0], np.float32) / 4.0, axis=0, mode="wrap")
    return _normalise(channels)


# MIND-SSC: the 12 pairs of the six-neighbourhood whose patch distances describe local self-similarity.
_SSC_OFFSETS = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]])
_SSC_PAIRS = [(a, b) for a in range(4) for b in range(a + 1, 4)] + [(a, a) for a in range(4)]


def mind_ssc(gray: np.ndarray, radius: int = 1, dilation: int = 2, sigma: float = 0.8) -> np.ndarray:
    """MIND-SSC (Heinrich et al. 2013) in 2-D: exp(-patch distance / local variance) between the
    neighbours of each pixel, on the 6 unordered neighbour pairs plus each neighbour with the centre
    (12 channels), normalised by their maximum.
    """
    image, _ = fill_nodata(gray)
    offsets = _SSC_OFFSETS * dilation
    shifted = [_shift(image, o) for o in offsets]
    channels = []
    for a, b in _SSC_PAIRS[:6]:
        channels.append((shifted[a] - shifted[b]) ** 2)
    for a in range(4):
        channels.append((shifted[a] - image) ** 2)
    dist = np.stack(channels)
    size = 2 * radius + 1
    dist = ndimage.uniform_filter(dist, size=(1, size, size), mode="reflect")
    if sigma > 0:
        dist = ndimage.gaussian_filter(dist, sigma=(0, sigma, sigma), mode="reflect")
    variance = dist.mean(axis=0)
    positive = variance[variance > 0]
    floor = 1e-3 * float(positive.mean()) if positive.size else 1e-6
    variance = np.clip(variance, floor, 1e6 * floor)
    mind = np.exp(-dist / variance)
    mind /= np.maximum(mind.max(axis=0, keepdims=True), 1e-6)
    return mind.astype(np.float32)


def _shift(image: np.ndarray, offset: np.ndarray) -> np.ndarray:
    """image(p + offset) with edge replication."""
    dy, dx = int(offset[0]), int(offset[1])
    padded = np.pad(image, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), mode="edge")
    h, w = image.shape
    return padded[abs(dy) + dy : abs(dy) + dy + h, abs(dx) + dx : abs(dx) + dx + w]


def _normalise(channels: np.ndarray) -> np.ndarray:
    norm = np.sqrt((channels**2).sum(axis=0, keepdims=True))
    floor = 0.05 * float(norm.mean()) + 1e-6
    return (channels / (norm + floor)).astype(np.float32)
