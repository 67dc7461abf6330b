"""Loss terms of DS-MAR's composite objective; fields are (B, 2, H, W) (dy, dx) in pixels (Contract 1).

- `mean_end_point_error`: supervised, where the true field is known.
- `mind_ssc` / `mind_loss`: modality-robust similarity (MIND self-similarity context) for
  unsupervised fine-tuning, comparing descriptors instead of intensities.
- `bending_energy`: second-order smoothness.
- `jacobian_determinant` / `folding_penalty` / `folding_share`: the map p -> p + d(p) must not fold (det J <= 0).
- `confidence_calibration`: the confidence should predict how close the field is to the truth.

The field scores are the differentiable torch twins of `kernel.field_metrics` (the numpy definitions
that evaluation uses), tested to agree with them on the same field.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from models.classical.features import ssc_pairs


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype).expand_as(values)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def mean_end_point_error(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean of `kernel.field_metrics.end_point_error` over `mask` (B, 1, H, W); smoothed at 0 for its gradient."""
    epe = torch.sqrt(((pred - target) ** 2).sum(1, keepdim=True) + 1e-6)
    return _masked_mean(epe, mask)


def _grad_central(field: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Central differences along rows and columns, on the interior (B, C, H-2, W-2)."""
    d_y = (field[:, :, 2:, 1:-1] - field[:, :, :-2, 1:-1]) / 2.0
    d_x = (field[:, :, 1:-1, 2:] - field[:, :, 1:-1, :-2]) / 2.0
    return d_y, d_x


def jacobian_determinant(field: torch.Tensor) -> torch.Tensor:
    """`kernel.field_metrics.jacobian_determinant` on the interior, (B, H-2, W-2); 1 for the zero field."""
    d_y, d_x = _grad_central(field)
    # Rows of J: the (y, x) components of the map; columns: derivatives along y, x.
    j11 = 1.0 + d_y[:, 0]
    j12 = d_x[:, 0]
    j21 = d_y[:, 1]
    j22 = 1.0 + d_x[:, 1]
    return j11 * j22 - j12 * j21


def folding_penalty(field: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Mean of relu(margin - det J): zero for any field whose Jacobian determinant stays above margin."""
    return F.relu(margin - jacobian_determinant(field)).mean()


def folding_share(field: torch.Tensor) -> torch.Tensor:
    """`kernel.field_metrics.folding_share` on the interior: share of pixels with det J <= 0."""
    return (jacobian_determinant(field) <= 0).float().mean()


def bending_energy(field: torch.Tensor) -> torch.Tensor:
    """Mean of d_yy^2 + d_xx^2 + 2 d_xy^2 over both components (second differences, interior)."""
    d_yy = field[:, :, 2:, 1:-1] - 2 * field[:, :, 1:-1, 1:-1] + field[:, :, :-2, 1:-1]
    d_xx = field[:, :, 1:-1, 2:] - 2 * field[:, :, 1:-1, 1:-1] + field[:, :, 1:-1, :-2]
    d_xy = (field[:, :, 2:, 2:] - field[:, :, 2:, :-2] - field[:, :, :-2, 2:] + field[:, :, :-2, :-2]) / 4.0
    return (d_yy**2 + d_xx**2 + 2 * d_xy**2).sum(1).mean()


def patch_distances(image: torch.Tensor, radius: int = 2, dilation: int = 2, centre: bool = False) -> torch.Tensor:
    """(B, 1, H, W) -> (B, P, H, W): mean squared differences of the (2 radius + 1)^2 patches around the pixel
    pairs of `ssc_pairs(dilation, centre)` (the neighbourhood the numpy descriptor shares), replicate borders."""
    k = 2 * radius + 1
    return F.avg_pool2d(pair_differences(image, dilation, centre), k, 1, radius, count_include_pad=False)


def pair_differences(image: torch.Tensor, dilation: int, centre: bool) -> torch.Tensor:
    """(B, 1, H, W) -> (B, P, H, W): the squared differences between the pixels of each pair of
    `ssc_pairs(dilation, centre)` around every pixel, replicate borders (what a patch distance averages)."""
    d = dilation
    pad = F.pad(image, (d, d, d, d), mode="replicate")
    h, w = image.shape[-2:]

    def shifted(s):
        return pad[:, :, d + s[0] : d + s[0] + h, d + s[1] : d + s[1] + w]

    return torch.cat([(shifted(a) - shifted(b)) ** 2 for a, b in ssc_pairs(d, centre=centre)], dim=1)


def self_similarity(distances: torch.Tensor, relative: bool = True) -> torch.Tensor:
    """Patch distances (B, P, H, W) -> exp(-distance / their mean at the pixel), normalised by the channels'
    maximum: the same structure gives the same descriptor whatever the radiometry. `relative` first takes each
    pixel's smallest distance off (Heinrich et al.'s form, which stretches even a flat pixel's noise to full
    contrast); without it a flat pixel's channels are all one, as in `models.classical.features.mind_ssc`."""
    if relative:
        distances = distances - distances.min(1, keepdim=True).values
    var = distances.mean(1, keepdim=True)
    var = var.clamp(min=var.mean() * 1e-3 + 1e-6, max=var.mean() * 1e3 + 1e-6)
    mind = torch.exp(-distances / var)
    return mind / mind.max(1, keepdim=True).values


def mind_ssc(image: torch.Tensor, radius: int = 2, dilation: int = 2) -> torch.Tensor:
    """MIND-SSC descriptor (Heinrich et al. 2013) of (B, 1, H, W) images -> (B, 6, H, W): the self-similarity of
    the patches around the 4 axis neighbours, compared pairwise."""
    return self_similarity(patch_distances(image, radius, dilation))


def mind_loss(fixed: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute MIND-SSC difference between the fixed image and the warped moving image."""
    return _masked_mean((mind_ssc(fixed) - mind_ssc(warped)).abs().mean(1, keepdim=True), mask)


def confidence_calibration(
    logit: torch.Tensor,
    pred: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor | None = None,
    scale_px: float = 1.0,
) -> torch.Tensor:
    """Binary cross-entropy between the confidence and exp(-EPE / scale): 1 where the field is exact."""
    epe = torch.sqrt(((pred.detach() - target) ** 2).sum(1, keepdim=True) + 1e-6)
    goal = torch.exp(-epe / scale_px)
    bce = F.binary_cross_entropy_with_logits(logit.float(), goal, reduction="none")
    return _masked_mean(bce, mask)
