"""Instance optimisation: unsupervised fine-tuning of DS-MAR's field on the pair at hand.

The composite loss's modality-robust term (MIND-SSC) is minimised over a smooth residual field
added to the network's output, with bending energy and the folding penalty as regularisers, coarse
to fine (half, then full resolution). MIND descriptors are computed once per image and the moving
descriptors are warped, as in learned-then-optimised registration (Learn2Reg style). Pure PyTorch,
runs on CPU.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from models import losses as L
from models.dsmar.flow import warp


def _descriptors(image: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    return L.mind_ssc(image * valid) * valid


def instance_optimise(
    fixed: np.ndarray,
    moving: np.ndarray,
    field: np.ndarray,
    steps: tuple[int, ...] = (30, 20),
    lr: float = 0.1,
    control_spacing: int = 8,
    bending: float = 1.0,
    jacobian: float = 1.0,
) -> np.ndarray:
    """Refine `field` (2, H, W) for network inputs fixed/moving (2, H, W) [gray, validity].

    `steps` per scale, coarsest first (scale factor 2^k for the k-th from the end); the residual
    lives on a grid of `control_spacing` px and is upsampled bilinearly, so it stays smooth.
    """
    f = torch.from_numpy(fixed)[None]
    m = torch.from_numpy(moving)[None]
    base = torch.from_numpy(field)[None].float()
    h, w = base.shape[-2:]
    ch, cw = max(2, -(-h // control_spacing)), max(2, -(-w // control_spacing))
    residual = torch.zeros(1, 2, ch, cw, requires_grad=True)
    optimiser = torch.optim.Adam([residual], lr=lr)
    n_scales = len(steps)
    for k, n_steps in enumerate(steps):
        factor = 2 ** (n_scales - 1 - k)
        fs = F.avg_pool2d(f, factor) if factor > 1 else f
        ms = F.avg_pool2d(m, factor) if factor > 1 else m
        fv, mv = (fs[:, 1:] > 0.99).float(), (ms[:, 1:] > 0.99).float()
        desc_f = _descriptors(fs[:, :1], fv)
        desc_m = torch.cat([_descriptors(ms[:, :1], mv), mv], 1)
        for _ in range(n_steps):
            full = base + F.interpolate(residual, size=(h, w), mode="bilinear", align_corners=True)
            scaled = F.avg_pool2d(full, factor) / factor if factor > 1 else full
            warped = warp(desc_m, scaled)
            mask = fv * (warped[:, -1:] > 0.99).float()
            sim = ((desc_f - warped[:, :-1]).abs().mean(1, keepdim=True) * mask).sum() / mask.sum().clamp_min(1)
            loss = sim + bending * L.bending_energy(residual) + jacobian * L.folding_penalty(full, 0.1)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        full = base + F.interpolate(residual, size=(h, w), mode="bilinear", align_corners=True)
    return full[0].numpy().astype(np.float32)
