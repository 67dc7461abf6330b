"""GPU-side (or CPU) batch preparation: known smooth warps, their inverse, radiometric augmentation.

The warps mirror `kernel.fields.random_smooth_field` (a similarity plus a smooth elastic field),
drawn for a virtual image of random size around the crop, so a 256-px crop sees the displacements
that a 1000-px benchmark image sees at its edges. The moving image is deformed as
moving_warped(q) = moving(q + w(q)) (the benchmark's convention) and the training target is the
exact inverse t(p) = -w(p + t(p)), found by fixed-point iteration.

Augmentations are modality-specific in spirit: multiplicative speckle (SAR), nonlinear monotone
radiometry and contrast inversion (any sensor pair), blur and additive noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from models.dsmar.flow import base_grid, gaussian_blur, sample_at


@dataclass(frozen=True)
class WarpRanges:
    max_shift_px: float = 20.0
    max_rotation_deg: float = 3.0
    max_scale: float = 0.03
    elastic_px: float = 4.0
    canvas_px: tuple[float, float] = (192.0, 1024.0)


def random_warps(batch: int, size: int, ranges: WarpRanges, gen: torch.Generator, device) -> torch.Tensor:
    """(B, 2, S, S) fields w: a similarity about a random centre of a virtual canvas plus elastic."""

    def uniform(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(*shape, generator=gen, device=device)

    grid = base_grid((size, size), torch.empty(0, device=device))  # (1, 2, S, S)
    canvas = uniform(*ranges.canvas_px, batch)
    centre = (size - 1) / 2 + (torch.rand(batch, 2, generator=gen, device=device) - 0.5) * (
        canvas[:, None] - size
    ).clamp_min(0)
    theta = torch.deg2rad(uniform(-ranges.max_rotation_deg, ranges.max_rotation_deg, batch))
    scale = 1.0 + uniform(-ranges.max_scale, ranges.max_scale, batch)
    shift = uniform(-ranges.max_shift_px, ranges.max_shift_px, batch, 2)
    rel = grid - centre[:, :, None, None]
    c, s = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    y = scale[:, None, None] * (c * rel[:, 0] - s * rel[:, 1])
    x = scale[:, None, None] * (s * rel[:, 0] + c * rel[:, 1])
    field = torch.stack([y, x], 1) - rel + shift[:, :, None, None]
    # Elastic: coarse noise, smoothed by bicubic upsampling, scaled to a random peak amplitude.
    smooth = (canvas / 4.0).clamp_min(24.0)
    cells = max(2, int(math.ceil(size / float(smooth.min()) * 2)) + 2)
    coarse = torch.randn(batch, 2, cells, cells, generator=gen, device=device)
    elastic = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    peak = elastic.abs().amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    amplitude = uniform(0.3, 1.0, batch)[:, None, None, None] * ranges.elastic_px
    return field + elastic / peak * amplitude


def invert_warps(warp: torch.Tensor, iterations: int = 8) -> torch.Tensor:
    """t with t(p) + w(p + t(p)) = 0, by fixed-point iteration (w smooth, |grad w| << 1): on the configs' warps
    (10 px, 2 deg, 2 %, 3 px elastic) 8 iterations reach float32's precision (a few 1e-6 px from 40)."""
    grid = base_grid(warp.shape[-2:], warp)
    h, w = warp.shape[-2:]
    truth = -warp
    for _ in range(iterations):
        pos = grid + truth
        pos = torch.stack([pos[:, 0].clamp(0, h - 1), pos[:, 1].clamp(0, w - 1)], 1)
        truth = -sample_at(warp, pos)
    return truth


def radiometric(images: torch.Tensor, gen: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Random radiometry of (B, 1, H, W) images in [0, 1]: gamma, inversion, speckle, blur, noise."""
    b = images.shape[0]
    dev = images.device

    def chance(p):
        return (torch.rand(b, 1, 1, 1, generator=gen, device=dev) < p * strength).to(images.dtype)

    x = images.clamp(0, 1)
    gamma = torch.exp(torch.randn(b, 1, 1, 1, generator=gen, device=dev) * 0.4 * strength)
    x = x.clamp_min(1e-4) ** gamma
    # A nonlinear, non-monotone-free remap: a random smooth tone curve (sum of two sigmoids).
    k = 4 + 8 * torch.rand(b, 1, 1, 1, generator=gen, device=dev)
    m = torch.rand(b, 1, 1, 1, generator=gen, device=dev)
    curve = torch.sigmoid(k * (x - m))
    x = x + chance(0.3) * (curve - x)
    x = x + chance(0.2) * (1 - 2 * x)  # contrast inversion
    looks = 1 + 4 * torch.rand(b, 1, 1, 1, generator=gen, device=dev)
    speckle = torch._standard_gamma(looks.expand_as(x).contiguous()) / looks
    x = x * (1 + chance(0.25) * (speckle - 1))
    sigma = torch.rand(b, generator=gen, device=dev) * 1.5 * (torch.rand(b, generator=gen, device=dev) < 0.3 * strength)
    x = gaussian_blur(x, sigma)
    noise = torch.randn(x.shape, generator=gen, device=dev) * 0.03 * torch.rand(b, 1, 1, 1, generator=gen, device=dev)
    return x + chance(0.5) * noise


def stretch(images: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The network input of `models.dsmar.infer.network_input`: 1-99 % stretch to [-1, 1], 0 invalid.

    (B, 1, H, W) images and bool validity -> (B, 2, H, W) [stretched, validity].
    """
    b = images.shape[0]
    flat = images.reshape(b, -1).float()
    step = max(1, flat.shape[1] // 65536)  # a strided subsample keeps the quantiles cheap
    sub = flat[:, ::step].masked_fill(~valid.reshape(b, -1)[:, ::step], float("nan"))
    q = torch.nanquantile(sub, torch.tensor([0.01, 0.99], device=images.device), dim=1)
    lo, hi = torch.nan_to_num(q[0], nan=0.0), torch.nan_to_num(q[1], nan=1.0)
    scale = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    x = ((images.float() - lo[:, None, None, None]) / scale[:, None, None, None]).clamp(0, 1)
    v = valid.to(x.dtype)
    return torch.cat([(2 * x - 1) * v, v], 1)


def random_nodata(batch: int, size: int, p: float, gen: torch.Generator, device) -> torch.Tensor:
    """(B, 1, S, S) validity: with probability p a sample loses a half-plane (a swath or scene edge)
    of random direction covering up to about a third of it; drawn per stream, independent of any warp."""
    grid = base_grid((size, size), torch.empty(0, device=device))[0] / max(size - 1, 1) - 0.5  # (2, S, S)
    angle = 2 * math.pi * torch.rand(batch, generator=gen, device=device)
    proj = torch.cos(angle)[:, None, None] * grid[0] + torch.sin(angle)[:, None, None] * grid[1]
    edge = 0.15 + 0.35 * torch.rand(batch, generator=gen, device=device)
    hit = torch.rand(batch, generator=gen, device=device) < p
    return ~((proj > edge[:, None, None]) & hit[:, None, None])[:, None]


@dataclass
class Prepared:
    fixed: torch.Tensor  # (B, 2, S, S) network input
    moving: torch.Tensor  # (B, 2, S, S) network input (warped)
    target: torch.Tensor  # (B, 2, S, S) true field
    mask: torch.Tensor  # (B, 1, S, S) where the target is defined
    fixed_modality: torch.Tensor
    moving_modality: torch.Tensor
    fixed_raw: torch.Tensor  # (B, 1, S, S) in [0, 1] (for the similarity loss)
    moving_raw: torch.Tensor


def prepare_batch(
    images,
    modalities,
    ranges: WarpRanges | None,
    gen: torch.Generator,
    crop: int,
    augment: float = 1.0,
    nodata: float = 0.3,
) -> Prepared:
    """uint8 (B, 2, T, T) aligned sources -> warped, augmented (B, *, crop, crop) inputs and the true field.

    Both streams are the centre `crop` of the source; the moving one is sampled from the whole
    source through the warp, so it is valid everywhere (a warp beyond the margin repeats the source's
    edge). No-data half-planes are drawn independently per stream (probability `nodata`), so
    validity never spells out the warp. `ranges=None` leaves the pair aligned (the contrastive stage).
    """
    src = images.float() / 255.0
    b, _, t, _ = src.shape
    m = (t - crop) // 2
    if m < 0:
        raise ValueError(f"sources of side {t} are smaller than the crop {crop}")
    fixed = src[:, :1, m : m + crop, m : m + crop]
    grid = base_grid((crop, crop), src)
    if ranges is not None:
        w = random_warps(b, crop, ranges, gen, src.device)
        moving = sample_at(src[:, 1:], grid + m + w, padding="border")
        target = invert_warps(w)
        end = grid + target
        mask = ((end >= 0) & (end <= crop - 1)).all(1, keepdim=True)
    else:
        moving = src[:, 1:, m : m + crop, m : m + crop]
        target = torch.zeros(b, 2, crop, crop, device=src.device)
        mask = torch.ones(b, 1, crop, crop, dtype=torch.bool, device=src.device)
    fixed_valid = random_nodata(b, crop, nodata * augment, gen, src.device)
    moving_valid = random_nodata(b, crop, nodata * augment, gen, src.device)
    fixed_aug = radiometric(fixed, gen, 0.5 * augment)
    moving_aug = radiometric(moving, gen, augment)
    return Prepared(
        fixed=stretch(fixed_aug, fixed_valid),
        moving=stretch(moving_aug, moving_valid),
        target=target,
        mask=mask & fixed_valid,
        fixed_modality=modalities[:, 0],
        moving_modality=modalities[:, 1],
        fixed_raw=fixed * fixed_valid,
        moving_raw=moving * moving_valid,
    )
