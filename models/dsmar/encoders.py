"""Dual-stream multiscale encoders: one independent branch per stream, conditioned on the modality.

The fixed and the moving stream share no weights: each learns its own mapping from its radiometry
into a common feature space (the contrastive stage pulls the two together). A learned per-modality
scale and shift (FiLM) after the input stem lets one branch serve SAR, maps, infrared... ; it starts
at zero, so modalities unseen in training fall back to the generic ("other") behaviour.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from models.api import MODALITIES
from models.losses import mind_ssc


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    """3x3 conv, GroupNorm (per-image statistics: robust to radiometry), LeakyReLU."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1),
        nn.GroupNorm(4, c_out),
        nn.LeakyReLU(0.1, inplace=True),
    )


class ResidualBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(conv_block(channels, channels), nn.Conv2d(channels, channels, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x + self.body(x), 0.1)


class StreamEncoder(nn.Module):
    """One stream: (B, 2, H, W) [normalised gray, validity mask] -> features at 1/2, 1/4, 1/8, 1/16.

    With `descriptors`, the stem also sees the image's MIND-SSC self-similarity channels: structure
    that is the same whatever the sensor's radiometry, so cross-modal matching has a signal to start
    from instead of being discovered from scratch (it cuts training time severalfold).
    Downsampling is an average pool followed by convolutions, so a feature at level l sits at the
    centre of its s x s input block (s = 2^l), matching how fields are pooled and upsampled.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 96), descriptors: bool = True):
        super().__init__()
        self.channels = channels
        self.descriptors = descriptors
        self.stem = nn.Conv2d(8 if descriptors else 2, channels[0], 3, padding=1)
        self.film = nn.Embedding(len(MODALITIES), 2 * channels[0])
        nn.init.zeros_(self.film.weight)
        levels = []
        c_prev = channels[0]
        for c in channels:
            levels.append(nn.Sequential(conv_block(c_prev, c), ResidualBlock(c)))
            c_prev = c
        self.levels = nn.ModuleList(levels)

    def forward(self, image: torch.Tensor, modality: torch.Tensor) -> list[torch.Tensor]:
        if self.descriptors:
            valid = image[:, 1:2]
            image = torch.cat([image, mind_ssc(image[:, :1].float()).to(image.dtype) * valid], 1)
        x = self.stem(image)
        gamma, beta = self.film(modality).chunk(2, dim=1)
        x = F.leaky_relu(x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None], 0.1)
        features = []
        for level in self.levels:
            x = level(F.avg_pool2d(x, 2))
            features.append(x)
        return features


class DualStreamEncoder(nn.Module):
    """Two StreamEncoders with separate weights: `fixed` and `moving`.

    The moving branch starts as a copy of the fixed one (then trains on its own), so that at the
    first step both streams already map the same structure to the same features and the field
    estimators get a meaningful correlation to learn from.
    """

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 96), descriptors: bool = True):
        super().__init__()
        self.fixed = StreamEncoder(channels, descriptors)
        self.moving = StreamEncoder(channels, descriptors)
        self.moving.load_state_dict(self.fixed.state_dict())

    def forward(self, fixed, moving, fixed_modality, moving_modality):
        return self.fixed(fixed, fixed_modality), self.moving(moving, moving_modality)


def modality_index(name: str) -> int:
    """Index of a Contract 2 modality name in the embedding tables."""
    return MODALITIES.index(name)
