"""The loss terms on fields and images with known answers."""

import math

import pytest
import torch

from models import losses as L
from models.dsmar.flow import base_grid


def field_from(fy, fx, size=24):
    """(1, 2, S, S) field whose components are functions of the (y, x) pixel grids."""
    g = base_grid((size, size), torch.empty(0)).double()[0]
    return torch.stack([fy(g[0], g[1]), fx(g[0], g[1])])[None]


def test_jacobian_of_identity_and_similarity():
    zero = torch.zeros(1, 2, 16, 16)
    assert torch.allclose(L.jacobian_determinant(zero), torch.ones(1, 14, 14))
    s, theta = 1.1, math.radians(20)
    c, sn = math.cos(theta), math.sin(theta)
    # p -> s R p: det = s^2 whatever the rotation.
    f = field_from(lambda y, x: s * (c * y - sn * x) - y, lambda y, x: s * (sn * y + c * x) - x)
    assert torch.allclose(L.jacobian_determinant(f), torch.full((1, 22, 22), s * s, dtype=f.dtype))


def test_folding_penalty_counts_a_mirror_only():
    mirror = field_from(lambda y, x: 0 * y, lambda y, x: -2 * x)  # x -> -x: det = -1 everywhere
    assert L.folding_share(mirror) == 1.0
    assert L.folding_penalty(mirror).item() == pytest.approx(1.0)
    assert L.folding_penalty(mirror, margin=0.5).item() == pytest.approx(1.5)
    smooth = field_from(lambda y, x: 0.05 * x, lambda y, x: 0.02 * y)
    assert L.folding_share(smooth) == 0.0
    assert L.folding_penalty(smooth).item() == 0.0


def test_bending_energy_analytic():
    affine = field_from(lambda y, x: 0.3 * x + 2, lambda y, x: -0.1 * y + 0.2 * x)
    assert L.bending_energy(affine).item() == pytest.approx(0.0, abs=1e-12)
    a = 0.01
    quadratic = field_from(lambda y, x: a * x**2, lambda y, x: 0 * x)  # d_xx = 2a, nothing else
    assert L.bending_energy(quadratic).item() == pytest.approx(4 * a * a, rel=1e-9)
    b = 0.02
    cross = field_from(lambda y, x: 0 * x, lambda y, x: b * x * y)  # d_xy = b: 2 b^2
    assert L.bending_energy(cross).item() == pytest.approx(2 * b * b, rel=1e-9)


def test_end_point_error_and_mask():
    pred = torch.zeros(1, 2, 4, 4)
    target = torch.zeros(1, 2, 4, 4)
    target[:, 0] = 3.0
    target[:, 1] = 4.0
    assert L.mean_end_point_error(pred, target).item() == pytest.approx(5.0, rel=1e-4)
    mask = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    mask[..., 0, 0] = True
    target[..., 1:, :] = 0
    assert L.mean_end_point_error(pred, target, mask).item() == pytest.approx(5.0, rel=1e-4)


def test_mind_is_radiometry_invariant_and_structure_sensitive():
    gen = torch.Generator().manual_seed(0)
    img = torch.nn.functional.avg_pool2d(torch.rand(1, 1, 40, 40, generator=gen), 3, 1, 1)
    remapped = 0.2 + 3.0 * img  # an affine radiometric change
    assert L.mind_loss(img, remapped).item() < 1e-4
    shifted = torch.roll(img, 3, dims=-1)
    assert L.mind_loss(img, shifted).item() > 0.05


def test_confidence_calibration_prefers_honest_confidence():
    pred = torch.zeros(1, 2, 8, 8)
    target = torch.zeros(1, 2, 8, 8)
    target[..., 4:] = 5.0  # right half wrong by ~7 px
    honest = torch.full((1, 1, 8, 8), 4.0)
    honest[..., 4:] = -4.0
    liar = -honest
    assert L.confidence_calibration(honest, pred, target) < L.confidence_calibration(liar, pred, target)


def test_losses_have_gradients():
    field = torch.randn(1, 2, 16, 16, requires_grad=True)
    total = (
        L.bending_energy(field) + L.folding_penalty(field * 5) + L.mean_end_point_error(field, torch.zeros_like(field))
    )
    total.backward()
    assert field.grad is not None and torch.isfinite(field.grad).all() and field.grad.abs().sum() > 0


def test_torch_field_scores_agree_with_the_kernel_ones():
    """The training twins and the numpy definitions evaluation uses give the same numbers on one field."""
    import numpy as np

    from kernel import field_metrics as K
    from kernel.fields import random_smooth_field

    rng = np.random.default_rng(3)
    field = random_smooth_field((48, 56), rng, max_shift_px=4.0, elastic_px=6.0, elastic_smoothness_px=6.0)
    field[:, 20:28, 20:28] *= -3.0  # a patch that folds
    truth = random_smooth_field((48, 56), rng)
    t_field, t_truth = torch.from_numpy(field)[None].double(), torch.from_numpy(truth)[None].double()

    det = K.jacobian_determinant(field)
    assert np.allclose(L.jacobian_determinant(t_field)[0].numpy(), det[1:-1, 1:-1], atol=1e-6)
    assert (det <= 0).any()
    interior = np.zeros(det.shape, bool)
    interior[1:-1, 1:-1] = True
    assert L.folding_share(t_field).item() == pytest.approx(K.folding_share(field, interior))
    epe = K.end_point_error(field, truth)
    assert L.mean_end_point_error(t_field, t_truth).item() == pytest.approx(float(epe.mean()), rel=1e-5)


def test_mind_ssc_channels_follow_the_shared_neighbourhood():
    import numpy as np

    from models.classical import features

    assert len(features.ssc_pairs(2, centre=False)) == 6
    assert len(features.ssc_pairs(2, centre=True)) == 10
    image = np.random.default_rng(0).random((40, 40)).astype(np.float32)
    assert features.mind_ssc(image).shape == (10, 40, 40)
    assert L.mind_ssc(torch.from_numpy(image)[None, None]).shape == (1, 6, 40, 40)
