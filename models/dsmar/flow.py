"""Dense fields on a pyramid: warping features, local correlation, residual estimators, upsampling.

Fields are (B, 2, h, w) tensors of (dy, dx) in pixels of their own level (Contract 1 at that level).
A level-l pixel i has its centre at full-resolution coordinate (i + 0.5) * 2^l - 0.5, which is the
convention of average pooling and of bilinear interpolation with align_corners=False.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def sample_at(features: torch.Tensor, positions: torch.Tensor, padding: str = "zeros") -> torch.Tensor:
    """Bilinear samples of `features` (B, C, h, w) at pixel positions (B, 2, H', W') [(y, x)].

    Outside the map: 0 (`padding="zeros"`) or the nearest edge value (`"border"`).
    """
    h, w = features.shape[-2:]
    gy = positions[:, 0] * (2.0 / max(h - 1, 1)) - 1.0
    gx = positions[:, 1] * (2.0 / max(w - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).to(features.dtype)
    return F.grid_sample(features, grid, mode="bilinear", padding_mode=padding, align_corners=True)


def base_grid(shape: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """(1, 2, h, w) pixel-centre coordinates (rows, columns)."""
    h, w = shape
    yy = torch.arange(h, device=like.device, dtype=torch.float32)
    xx = torch.arange(w, device=like.device, dtype=torch.float32)
    return torch.stack(torch.meshgrid(yy, xx, indexing="ij"))[None]


def warp(features: torch.Tensor, field: torch.Tensor) -> torch.Tensor:
    """Contract 1 warp of (B, C, h, w) features by a (B, 2, h, w) field in pixels of that level."""
    return sample_at(features, base_grid(field.shape[-2:], field) + field.float())


def upsample_field(field: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Bilinear upsampling to `shape`, rescaling the vectors to the finer pixels."""
    sy = shape[0] / field.shape[-2]
    sx = shape[1] / field.shape[-1]
    up = F.interpolate(field, size=shape, mode="bilinear", align_corners=False)
    return torch.cat([up[:, :1] * sy, up[:, 1:] * sx], dim=1)


def downsample_field(field: torch.Tensor, factor: int) -> torch.Tensor:
    """Average-pool a full-resolution field to a level `factor` times coarser, in that level's pixels."""
    return F.avg_pool2d(field, factor) / factor


def local_correlation(fixed: torch.Tensor, moving: torch.Tensor, radius: int) -> torch.Tensor:
    """Cosine similarity of each fixed feature with moving features in a (2r+1)^2 window.

    Pure PyTorch (runs on CPU), (B, (2r+1)^2, h, w), displacement (dy, dx) in row-major order.
    """
    f = F.normalize(fixed.float(), dim=1)
    m = F.pad(F.normalize(moving.float(), dim=1), (radius,) * 4)
    h, w = fixed.shape[-2:]
    out = []
    for dy in range(2 * radius + 1):
        for dx in range(2 * radius + 1):
            out.append((f * m[:, :, dy : dy + h, dx : dx + w]).sum(1))
    return torch.stack(out, dim=1)


class FieldEstimator(nn.Module):
    """Residual field at one level from correlation, fixed features and the prior field."""

    def __init__(self, c_in: int, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(hidden, hidden // 2, 3, padding=4, dilation=4),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(hidden // 2, hidden // 2, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
        )
        self.head = nn.Conv2d(hidden // 2, 2, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.net(x)
        return self.head(hidden), hidden


def soft_argmax(corr: torch.Tensor, radius: int, sharpness: torch.Tensor) -> torch.Tensor:
    """(B, (2r+1)^2, h, w) correlation -> (B, 2, h, w) expected displacement under softmax(sharpness * corr)."""
    steps = torch.arange(-radius, radius + 1, device=corr.device, dtype=torch.float32)
    dy, dx = torch.meshgrid(steps, steps, indexing="ij")
    p = torch.softmax(sharpness * corr.float(), dim=1)
    return torch.stack([(p * dy.reshape(1, -1, 1, 1)).sum(1), (p * dx.reshape(1, -1, 1, 1)).sum(1)], 1)


class CorrelationLevel(nn.Module):
    """Coarse-to-fine step: warp moving features by the prior, correlate, soft-argmax, residual.

    The soft arg-max of the correlation (learned sharpness) moves the field towards the best match
    from the first training step; the estimator learns the residual (sub-cell, occlusion, context).
    """

    def __init__(self, channels: int, radius: int, hidden: int = 64):
        super().__init__()
        self.radius = radius
        self.sharpness = nn.Parameter(torch.tensor(10.0))
        self.estimator = FieldEstimator((2 * radius + 1) ** 2 + channels + 4, hidden)

    def forward(self, fixed, moving, prior):
        warped = warp(moving, prior)
        corr = local_correlation(fixed, warped, self.radius)
        match = soft_argmax(corr, self.radius, self.sharpness)
        x = torch.cat([corr.to(fixed.dtype), fixed, prior.to(fixed.dtype), match.to(fixed.dtype)], 1)
        residual, hidden = self.estimator(x)
        return prior + match + residual.float(), hidden


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = 4) -> torch.Tensor:
    """Per-sample separable Gaussian blur of (B, 1, H, W); sigma (B,) in pixels (0 keeps the image), kernels of
    `radius` px a side, replicate borders."""
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kern = torch.exp(-0.5 * (x[None] / sigma[:, None].clamp_min(1e-3)) ** 2)
    kern = kern / kern.sum(1, keepdim=True)
    b = images.shape[0]
    out = F.conv2d(
        F.pad(images, (radius, radius, 0, 0), mode="replicate").transpose(0, 1), kern[:, None, None, :], groups=b
    ).transpose(0, 1)
    out = F.conv2d(
        F.pad(out, (0, 0, radius, radius), mode="replicate").transpose(0, 1), kern[:, None, :, None], groups=b
    ).transpose(0, 1)
    return out
