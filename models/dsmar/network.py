"""The DS-MAR network: encoders -> attention at 1/16 and 1/8 -> correlation at 1/4, 1/2 -> refinement."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from dataclasses import field as default

import torch
from torch import nn
from torch.nn import functional as F

from models.dsmar.attention import AttentionLevel
from models.dsmar.encoders import DualStreamEncoder
from models.dsmar.flow import CorrelationLevel, local_correlation, upsample_field, warp
from models.dsmar.matching import FineMatcher
from models.dsmar.refinement import AdaptiveRefinement


@dataclass(frozen=True)
class DSMARConfig:
    """Architecture; stored with the weights so a file rebuilds its own network.

    `attention=False` replaces the deformable cross-attention of the coarse levels with plain local
    correlation (the ablation); `refinement=False` drops the adaptive refinement module.
    """

    channels: tuple[int, ...] = (16, 32, 64, 96)
    attention: bool = True
    refinement: bool = True
    descriptors: bool = True
    radii_16: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
    radii_8: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0)
    points: int = 9
    corr_radius: int = 3
    fine_radius: int = 2
    hidden: int = 64
    refine_hidden: int = 32
    matching: bool = False

    @property
    def stride(self) -> int:
        """Input sides must be multiples of this (the coarsest level's factor)."""
        return 2 ** len(self.channels)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> DSMARConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class DSMAROutput:
    """One forward pass: the full-resolution field and confidence, and what training supervises."""

    field: torch.Tensor  # (B, 2, H, W) in full-resolution pixels (Contract 1)
    confidence: torch.Tensor  # (B, 1, H, W) in [0, 1]
    confidence_logit: torch.Tensor  # (B, 1, H/2, W/2): the confidence before the sigmoid and upsampling
    confidence_learned: bool  # False without the refinement module: the confidence is feature agreement
    levels: list[torch.Tensor]  # the field of every level, coarsest first, in its own pixels
    matched: list[torch.Tensor] = default(default_factory=list)  # after each fine matching level, full resolution


class DSMAR(nn.Module):
    """(fixed (B,2,H,W), moving (B,2,H,W), modality ids) -> `DSMAROutput`.

    Inputs are [normalised gray, validity mask] per stream; H and W multiples of `config.stride`.
    """

    def __init__(self, config: DSMARConfig = DSMARConfig()):
        super().__init__()
        self.config = config
        ch = config.channels
        self.encoder = DualStreamEncoder(ch, config.descriptors)
        if config.attention:
            self.coarse = nn.ModuleList(
                [
                    AttentionLevel(ch[3], config.radii_16, config.points, config.hidden),
                    AttentionLevel(ch[2], config.radii_8, config.points, config.hidden),
                ]
            )
        else:
            self.coarse = nn.ModuleList(
                [
                    CorrelationLevel(ch[3], 4, config.hidden),
                    CorrelationLevel(ch[2], config.corr_radius, config.hidden),
                ]
            )
        self.fine = nn.ModuleList(
            [
                CorrelationLevel(ch[1], config.corr_radius, config.hidden),
                CorrelationLevel(ch[0], config.fine_radius, config.hidden // 2),
            ]
        )
        self.refine = AdaptiveRefinement(ch[0], 1, config.refine_hidden) if config.refinement else None
        self.matcher = FineMatcher() if config.matching else None

    def forward(self, fixed, moving, fixed_modality, moving_modality, match: bool = True) -> DSMAROutput:
        """`match=False` stops before the fine matching stage (inference runs it on the whole pair, after the
        trend: `models.dsmar.fine`)."""
        feats_f, feats_m = self.encoder(fixed, moving, fixed_modality, moving_modality)
        levels = []
        b = fixed.shape[0]
        coarsest = feats_f[-1]
        field = torch.zeros(b, 2, *coarsest.shape[-2:], device=fixed.device, dtype=torch.float32)
        steps = list(self.coarse) + list(self.fine)
        for i, step in enumerate(steps):
            idx = len(feats_f) - 1 - i
            if field.shape[-2:] != feats_f[idx].shape[-2:]:
                field = upsample_field(field, feats_f[idx].shape[-2:])
            field, _ = step(feats_f[idx], feats_m[idx], field)
            levels.append(field)
        if self.refine is not None:
            field, logit = self.refine(feats_f[0], feats_m[0], field)
            levels.append(field)
            confidence = torch.sigmoid(logit)
        else:
            # Without the module, the feature agreement under the field stands in for confidence.
            agreement = local_correlation(feats_f[0], warp(feats_m[0], field), 0)
            logit = torch.logit(agreement.clamp(1e-4, 1 - 1e-4))
            confidence = agreement.clamp(0, 1)
        full = fixed.shape[-2:]
        dense = upsample_field(field, full)
        confidence = F.interpolate(confidence, size=full, mode="bilinear", align_corners=False)
        matched = []
        if self.matcher is not None and match:
            done = self.matcher(fixed, moving, fixed_modality, moving_modality, dense)
            dense, confidence, matched = done.field, done.confidence, done.levels
        return DSMAROutput(
            field=dense,
            confidence=confidence,
            confidence_logit=logit,
            confidence_learned=self.refine is not None,
            levels=levels,
            matched=matched,
        )


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
