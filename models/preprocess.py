"""Radiometry-agnostic preprocessing shared by the methods, in torch on whatever device holds the image.

The numpy entry (`to_gray`) runs the same torch code on the CPU, so the classical methods and DS-MAR on a GPU
see one formula, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from kernel.contracts import MODALITY

# Order statistics nearer an end than this share of the values are read by a partial sort of that end (`topk`);
# others by a full sort.
_END_SHARE = 0.125


def to_gray(image: np.ndarray, modality: str) -> np.ndarray:
    """(C, H, W) float32 with NaN -> (H, W) float32 in about [0, 1], NaN kept (`gray`)."""
    return gray(torch.from_numpy(np.ascontiguousarray(image, np.float32)), modality).numpy()


def gray(image: torch.Tensor, modality: str) -> torch.Tensor:
    """(C, H, W) float32 with NaN -> (H, W) float32 in about [0, 1], NaN kept, on the image's device.

    SAR in linear power is log-compressed (a dB image is left as it is: its range is already
    compressed); every modality is then robustly stretched between its 1st and 99th percentiles so
    that reflectance, dB, 8-bit and elevation look alike to a method.
    """
    out = band_mean(image) if image.shape[0] > 1 else image[0].clone()
    valid = torch.isfinite(out)
    if not bool(valid.any()):
        return out
    least = float(torch.where(valid, out, torch.inf).amin())
    if MODALITY[modality].backscatter and least >= 0 and percentiles(out, valid, (50.0,))[0] < 1.0:
        # in float64, rounded once: every device gives the same float32 decibels
        out = torch.where(valid, 10.0 * torch.log10(out.clamp_min(1e-6).double()), torch.nan).float()
    lo, hi = percentiles(out, valid, (1.0, 99.0))
    scale = hi - lo if hi > lo else 1.0
    return ((out.double() - lo) / scale).clamp(0.0, 1.0).float()


def block_means(image: torch.Tensor, factor: int) -> torch.Tensor:
    """`factor` x `factor` block means over the last two axes of (..., H, W) (NaN where any is NaN; a last partial
    block is dropped): an image shrunk for a coarser, cheaper pass."""
    h, w = (image.shape[-2] // factor) * factor, (image.shape[-1] // factor) * factor
    blocks = image[..., :h, :w].reshape(*image.shape[:-2], h // factor, factor, w // factor, factor)
    return blocks.mean(dim=(-3, -1))


def band_mean(image: torch.Tensor) -> torch.Tensor:
    """Mean over bands of the finite values; NaN where no band is finite (quietly, unlike nanmean)."""
    finite = torch.isfinite(image)
    count = finite.sum(0)
    total = torch.where(finite, image, 0.0).sum(0)
    return torch.where(count > 0, total / count.clamp_min(1), torch.nan).float()


def percentiles(image: torch.Tensor, valid: torch.Tensor, qs: tuple[float, ...]) -> list[float]:
    """numpy's default (linear) percentiles `qs` of `image`'s `valid` values, in float64 as numpy gives them: numpy's
    own on the CPU (a selection twice as fast as torch's there), `selected_percentiles` on another device."""
    if image.device.type == "cpu":
        return [float(v) for v in np.percentile(image.numpy()[valid.numpy()], qs)]
    return selected_percentiles(image, valid, qs)


def selected_percentiles(image: torch.Tensor, valid: torch.Tensor, qs: tuple[float, ...]) -> list[float]:
    """`percentiles` by partial sorts on the image's device: the invalid values become +inf, above every valid one,
    so the valid ones' order statistics keep their ranks and no masked copy is made."""
    values = torch.where(valid, image, torch.inf).flatten()
    total, n = values.numel(), int(valid.sum())
    out = []
    for q in qs:
        position = q / 100.0 * (n - 1)
        i = math.floor(position)
        j, share = min(i + 1, n - 1), position - i
        if j + 1 <= _END_SHARE * total:
            low = torch.topk(values, j + 1, largest=False).values
            a, b = low[i], low[j]
        elif total - i <= _END_SHARE * total:
            high = torch.topk(values, total - i, largest=True).values
            a, b = high[total - 1 - i], high[total - 1 - j]
        else:  # one sort on the device; a selection there runs in one block per slice
            ordered = torch.sort(values).values
            a, b = ordered[i], ordered[j]
        out.append(_lerp(a.cpu().numpy(), b.cpu().numpy(), share))
    return out


def _lerp(a: np.ndarray, b: np.ndarray, share: float) -> float:
    """numpy's interpolation between neighbouring order statistics (`numpy.lib._function_base_impl._lerp` with an
    array of percentiles): their difference in their own dtype, the rest in float64, from the nearer one."""
    diff = float(b - a)
    return float(b) - diff * (1 - share) if share >= 0.5 else float(a) + diff * share
