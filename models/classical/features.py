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


# MIND-SSC in 2-D (Heinrich et al. 2013): the 4 axis neighbours of a pixel, at distance `dilation`.
SSC_NEIGHBOURS = ((0, 1), (1, 0), (0, -1), (-1, 0))


def ssc_pairs(dilation: int, centre: bool) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The (offset, offset) pairs whose patch distances are the MIND-SSC channels, in channel order.

    The 6 unordered pairs of the 4 axis neighbours (the 2-D analogue of the 3-D six-neighbourhood's
    12 edges), then with `centre` each neighbour paired with the pixel itself (10 pairs in all). The
    numpy descriptor here uses all 10, the torch one in `models.losses` (the network's input) the 6.
    """
    shifts = [(dy * dilation, dx * dilation) for dy, dx in SSC_NEIGHBOURS]
    pairs = [(a, b) for i, a in enumerate(shifts) for b in shifts[i + 1 :]]
    if centre:
        pairs += [(a, (0, 0)) for a in shifts]
    return pairs


# px of Gaussian on MIND-SSC's patch distances: each channel averages a few pixels' structure, so a match is
# not decided by single noisy pixels (the DEM's smooth shading, SAR speckle).
PATCH_SIGMA = 0.8


def mind_ssc(gray: np.ndarray, radius: int = 1, dilation: int = 2, sigma: float = PATCH_SIGMA) -> np.ndarray:
    """MIND-SSC (Heinrich et al. 2013) in 2-D: exp(-patch distance / local variance) on the 10 pairs
    of `ssc_pairs(dilation, centre=True)` (10 channels), normalised by their maximum.
    """
    image, _ = fill_nodata(gray)
    pairs = ssc_pairs(dilation, centre=True)
    shifted = {offset: _shift(image, offset) for pair in pairs for offset in pair}
    dist = np.stack([(shifted[a] - shifted[b]) ** 2 for a, b in pairs])
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


def _shift(image: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """image(p + offset) with edge replication."""
    dy, dx = offset
    padded = np.pad(image, ((abs(dy), abs(dy)), (abs(dx), abs(dx))), mode="edge")
    h, w = image.shape
    return padded[abs(dy) + dy : abs(dy) + dy + h, abs(dx) + dx : abs(dx) + dx + w]


def _normalise(channels: np.ndarray) -> np.ndarray:
    norm = np.sqrt((channels**2).sum(axis=0, keepdims=True))
    floor = 0.05 * float(norm.mean()) + 1e-6
    return (channels / (norm + floor)).astype(np.float32)
