"""Deformable cross-attention between the streams (Deformable-DETR style, pure PyTorch, runs on CPU).

Each fixed-grid query looks at K points per head in the moving feature map, around the location the
current field points to. Sampling offsets and attention weights are predicted from both streams (the
fixed feature and the moving feature already brought under it); the weights add a learned term to
the query-key similarity of the sampled points. Besides attended features, the module returns the
attention-weighted mean offset: a soft, semantic-level displacement estimate that initialises the
dense field at the coarse scales.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from models.dsmar.flow import FieldEstimator, base_grid, sample_at, warp


def lattice_offsets(radii: tuple[float, ...], points: int) -> torch.Tensor:
    """(H, K, 2) initial offsets: head h samples a sqrt(K) x sqrt(K) lattice of half-width radii[h]."""
    side = int(round(math.sqrt(points)))
    if side * side != points:
        raise ValueError(f"points must be a square number, got {points}")
    steps = torch.linspace(-1.0, 1.0, side) if side > 1 else torch.zeros(1)
    yy, xx = torch.meshgrid(steps, steps, indexing="ij")
    unit = torch.stack([yy.flatten(), xx.flatten()], -1)
    return torch.stack([unit * r for r in radii])


class DeformableCrossAttention(nn.Module):
    """(fixed (B,C,h,w), moving (B,C,h,w), prior field (B,2,h,w)) -> (attended features, displacement)."""

    def __init__(self, channels: int, radii: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0), points: int = 9):
        super().__init__()
        self.heads = len(radii)
        self.points = points
        if channels % self.heads:
            raise ValueError(f"channels {channels} must be divisible by the {self.heads} heads")
        self.head_dim = channels // self.heads
        self.query_in = nn.Sequential(nn.Conv2d(2 * channels, channels, 1), nn.LeakyReLU(0.1, inplace=True))
        self.query = nn.Conv2d(channels, channels, 1)
        self.offsets = nn.Conv2d(channels, self.heads * points * 2, 1)
        nn.init.zeros_(self.offsets.weight)
        with torch.no_grad():
            self.offsets.bias.copy_(lattice_offsets(radii, points).flatten())
        self.weights = nn.Conv2d(channels, self.heads * points, 1)
        nn.init.zeros_(self.weights.weight)
        nn.init.zeros_(self.weights.bias)
        # Parameter-free evidence: cosine similarity of the raw features at each sampled point,
        # with a learned sharpness; the attention is a soft arg-max of matching from the first step.
        self.sharpness = nn.Parameter(torch.tensor(10.0))
        self.key = nn.Conv2d(channels, channels, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, fixed, moving, prior):
        b, c, h, w = fixed.shape
        hd, k = self.heads, self.points
        q_in = self.query_in(torch.cat([fixed, warp(moving, prior).to(fixed.dtype)], 1))
        offsets = self.offsets(q_in).float().reshape(b, hd, k, 2, h, w)
        # Sampling positions in the moving map: the prior's target plus each offset.
        centre = base_grid((h, w), fixed) + prior.float()  # (B, 2, h, w)
        pos = centre[:, None, None] + offsets  # (B, H, K, 2, h, w)
        pos = pos.permute(0, 1, 3, 4, 5, 2).reshape(b * hd, 2, h, w * k)
        keys = self.key(moving).reshape(b * hd, self.head_dim, *moving.shape[-2:])
        values = self.value(moving).reshape(b * hd, self.head_dim, *moving.shape[-2:])
        k_s = sample_at(keys, pos).reshape(b, hd, self.head_dim, h, w, k)
        v_s = sample_at(values, pos).reshape(b, hd, self.head_dim, h, w, k)
        q = self.query(q_in).reshape(b, hd, self.head_dim, h, w, 1)
        logits = (q * k_s).sum(2) / math.sqrt(self.head_dim)  # (B, H, h, w, K)
        logits = logits + self.weights(q_in).reshape(b, hd, k, h, w).permute(0, 1, 3, 4, 2)
        raw = sample_at(
            F.normalize(moving.float(), dim=1),
            pos.reshape(b, hd, 2, h, w * k).permute(0, 2, 3, 1, 4).reshape(b, 2, h, hd * w * k),
        )  # (B, C, h, H*w*K): every head's points, all channels
        cos = (F.normalize(fixed.float(), dim=1)[..., None, :, None] * raw.reshape(b, c, h, hd, w, k)).sum(1)
        logits = logits + self.sharpness * cos.permute(0, 2, 1, 3, 4).float()
        attn = torch.softmax(logits.float(), dim=-1)
        attended = (v_s.float() * attn[:, :, None]).sum(-1).reshape(b, c, h, w)
        off = offsets.permute(0, 1, 4, 5, 2, 3)  # (B, H, h, w, K, 2)
        displacement = (attn[..., None] * off).sum(-2).mean(1).permute(0, 3, 1, 2)  # (B, 2, h, w)
        return self.out(attended.to(fixed.dtype)), displacement


class AttentionLevel(nn.Module):
    """A coarse level: deformable cross-attention gives a displacement, an estimator corrects it."""

    def __init__(self, channels: int, radii: tuple[float, ...], points: int = 9, hidden: int = 64):
        super().__init__()
        self.attention = DeformableCrossAttention(channels, radii, points)
        self.estimator = FieldEstimator(2 * channels + 4, hidden)

    def forward(self, fixed, moving, prior):
        attended, displacement = self.attention(fixed, moving, prior)
        x = torch.cat([fixed, attended, displacement.to(fixed.dtype), prior.to(fixed.dtype)], 1)
        residual, hidden = self.estimator(x)
        return prior + displacement + residual.float(), hidden
