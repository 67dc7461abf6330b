"""Inference: any size from 64 x 64 (padding), NaN handling, and tiling with blended overlaps."""

import numpy as np
import pytest
import torch

from models.dsmar import DSMAR, DSMARConfig
from models.dsmar.infer import modality_id, network_input, predict_field, tile_starts

SMALL = DSMARConfig(channels=(8, 16, 16, 16), hidden=16, refine_hidden=8)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    net = DSMAR(SMALL).eval()
    with torch.no_grad():  # non-zero heads, so the field depends on the content
        for name, p in net.named_parameters():
            if name.endswith("head.weight") or name.endswith("residual.weight"):
                p.normal_(std=0.05)
    return net


def test_network_input_marks_nan_invalid():
    img = np.random.default_rng(0).random((3, 20, 30)).astype(np.float32)
    img[:, :5] = np.nan
    x = network_input(torch.from_numpy(img), "optical").numpy()
    assert x.shape == (2, 20, 30)
    assert (x[1, :5] == 0).all() and (x[0, :5] == 0).all() and (x[1, 5:] == 1).all()
    assert x[0].min() >= -1 and x[0].max() <= 1


def test_unknown_modalities_fall_back_to_other():
    assert modality_id("dem", ["optical", "sar", "other"]) == modality_id("other", None)
    assert modality_id("sar", ["optical", "sar", "other"]) != modality_id("other", None)


def test_tile_starts_cover_everything():
    for size, tile, overlap in [(100, 100, 10), (1000, 256, 64), (257, 256, 32)]:
        starts = tile_starts(size, tile, overlap)
        covered = np.zeros(size, bool)
        for s in starts:
            covered[s : s + tile] = True
        assert covered.all() and starts[-1] + tile == max(size, tile)


@pytest.mark.parametrize("shape", [(64, 64), (70, 93)])
def test_any_size_and_nan(model, shape):
    rng = np.random.default_rng(1)
    fixed = rng.random((1, *shape)).astype(np.float32)
    moving = rng.random((2, *shape)).astype(np.float32)
    moving[:, :, :7] = np.nan
    field, conf = predict_field(model, fixed, moving, "optical", "sar", device="cpu")
    assert field.shape == (2, *shape) and conf.shape == shape
    assert np.isfinite(field).all() and (conf >= 0).all() and (conf <= 1).all()


def test_tiling_blends_to_the_untiled_field_in_the_interior():
    from scipy import ndimage

    from models.dsmar.weights import load_weights

    shipped, _ = load_weights()  # a trained network: a random one's matches are arbitrary
    base = ndimage.gaussian_filter(np.random.default_rng(2).random((160, 160)), 2).astype(np.float32)[None]
    whole, _ = predict_field(shipped, base, np.roll(base, 2, axis=-1), "optical", "optical", device="cpu")
    tiled, _ = predict_field(
        shipped, base, np.roll(base, 2, axis=-1), "optical", "optical", tile=96, overlap=32, device="cpu"
    )
    assert tiled.shape == whole.shape and np.isfinite(tiled).all()
    assert abs(np.median(whole[1]) - 2.0) < 0.5
    # Tiles see less context, so they differ a little; the blend adds no seams of tile size.
    assert np.median(np.abs(tiled - whole)) < 0.5
    seams = np.abs(np.diff(tiled, axis=-1)).max()
    assert seams < np.abs(np.diff(whole, axis=-1)).max() + 0.5


def test_instance_optimisation_moves_towards_a_known_shift():
    from scipy import ndimage

    from models.dsmar.instance import instance_optimise

    rng = np.random.default_rng(4)
    base = ndimage.gaussian_filter(rng.random((96, 96)), 3)
    fixed = base[None].astype(np.float32)
    moving = ndimage.shift(base, (0.0, 1.5), order=3, mode="nearest")[None].astype(np.float32)
    f_in, m_in = (network_input(torch.from_numpy(x), "optical").numpy() for x in (fixed, moving))
    field = instance_optimise(f_in, m_in, np.zeros((2, 96, 96), np.float32), steps=(40, 40), lr=0.1)
    inner = field[:, 16:-16, 16:-16]
    # moving(y, x + 1.5) = fixed(y, x): the field's dx approaches 1.5, dy stays near 0.
    assert abs(np.median(inner[1]) - 1.5) < 0.5 and abs(np.median(inner[0])) < 0.3


def test_full_symmetry_augmentation_is_exactly_equivariant(model):
    """Averaged over all eight frames, registering a rotated pair gives the rotated field."""
    from models.dsmar import dihedral

    rng = np.random.default_rng(3)
    fixed = rng.random((1, 64, 96)).astype(np.float32)
    moving = rng.random((1, 64, 96)).astype(np.float32)
    field, conf = predict_field(model, fixed, moving, "optical", "sar", device="cpu", augment=8)
    sym = (1, True)
    turned, turned_conf = predict_field(
        model, dihedral.apply(fixed, sym), dihedral.apply(moving, sym), "optical", "sar", device="cpu", augment=8
    )
    assert np.allclose(turned, dihedral.apply_field(field, sym), atol=1e-4)
    assert np.allclose(turned_conf, dihedral.apply(conf, sym), atol=1e-5)
    plain, _ = predict_field(model, fixed, moving, "optical", "sar", device="cpu")
    assert not np.allclose(plain, field, atol=1e-3)
