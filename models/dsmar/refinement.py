"""Adaptive deformation-field refinement: confidence-gated residual learning.

From the fixed features, the moving features warped by the current field, their local correlation
and the field itself, the module predicts a per-pixel confidence c in [0, 1] and a residual r, and
returns field + (1 - c) * r: where the coarse-to-fine field is trusted it is kept, where it is not
the residual corrects it. The confidence is the `confidence` of the pair API (Contract 2); a
calibration loss ties it to the actual end-point error during training.
"""

from __future__ import annotations

import torch
from torch import nn

from models.dsmar.flow import local_correlation, warp


class AdaptiveRefinement(nn.Module):
    def __init__(self, channels: int, radius: int = 2, hidden: int = 48):
        super().__init__()
        self.radius = radius
        c_in = 2 * channels + (2 * radius + 1) ** 2 + 2
        self.body = nn.Sequential(
            nn.Conv2d(c_in, hidden, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=4, dilation=4),
            nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(hidden, hidden, 3, padding=1),
            nn.LeakyReLU(0.1, inplace=True),
        )
        self.residual = nn.Conv2d(hidden, 2, 3, padding=1)
        self.confidence = nn.Conv2d(hidden, 1, 3, padding=1)
        nn.init.zeros_(self.residual.weight)
        nn.init.zeros_(self.residual.bias)

    def forward(self, fixed: torch.Tensor, moving: torch.Tensor, field: torch.Tensor):
        """Returns (refined field, confidence logit (B, 1, h, w))."""
        warped = warp(moving, field)
        corr = local_correlation(fixed, warped, self.radius)
        x = torch.cat([fixed, warped.to(fixed.dtype), corr.to(fixed.dtype), field.to(fixed.dtype)], 1)
        hidden = self.body(x)
        logit = self.confidence(hidden).float()
        confidence = torch.sigmoid(logit)
        return field + (1.0 - confidence) * self.residual(hidden).float(), logit
