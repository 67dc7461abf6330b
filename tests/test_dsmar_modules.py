"""Shapes and gradients of every DS-MAR module, on CPU."""

import pytest
import torch

from models.dsmar import DSMAR, DSMARConfig
from models.dsmar.attention import AttentionLevel, DeformableCrossAttention, lattice_offsets
from models.dsmar.encoders import DualStreamEncoder, modality_index
from models.dsmar.flow import (
    CorrelationLevel,
    downsample_field,
    local_correlation,
    soft_argmax,
    upsample_field,
    warp,
)
from models.dsmar.refinement import AdaptiveRefinement

GEN = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.rand(*shape, generator=GEN)


def assert_grads(module, *inputs):
    for p in module.parameters():
        p.grad = None
    out = module(*inputs)
    tensors = out if isinstance(out, tuple) else (out,)
    flat = [t for item in tensors for t in (item if isinstance(item, list) else [item])]
    sum(t.float().sum() for t in flat if isinstance(t, torch.Tensor)).backward()
    with_grad = [n for n, p in module.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert with_grad, "no parameter received a gradient"
    return out


def test_encoders_are_independent_and_multiscale():
    enc = DualStreamEncoder((8, 8, 16, 16))
    x = rand(2, 2, 64, 48)
    mods = torch.tensor([modality_index("optical"), modality_index("sar")])
    ff, fm = assert_grads(enc, x, x, mods, mods)
    assert [f.shape for f in ff] == [(2, 8, 32, 24), (2, 8, 16, 12), (2, 16, 8, 6), (2, 16, 4, 3)]
    assert [f.shape for f in fm] == [f.shape for f in ff]
    fixed_ids = {id(p) for p in enc.fixed.parameters()}
    assert not fixed_ids & {id(p) for p in enc.moving.parameters()}
    assert torch.allclose(ff[0], fm[0])  # the moving branch starts as a copy of the fixed one...
    with torch.no_grad():
        enc.moving.stem.weight.add_(1.0)
    ff2, fm2 = enc(x, x, mods, mods)
    assert torch.allclose(ff2[0], ff[0]) and not torch.allclose(fm2[0], fm[0])  # ...and trains on its own


def test_descriptor_channels_make_the_stem_see_structure_not_radiometry():
    enc = DualStreamEncoder((8, 8, 16, 16))
    assert enc.fixed.stem.in_channels == 8
    assert DualStreamEncoder((8, 8, 16, 16), descriptors=False).fixed.stem.in_channels == 2


def test_modality_embedding_changes_features():
    enc = DualStreamEncoder((8, 8, 16, 16))
    torch.nn.init.normal_(enc.moving.film.weight)
    x = rand(1, 2, 32, 32)
    a = enc.moving(x, torch.tensor([modality_index("sar")]))[0]
    b = enc.moving(x, torch.tensor([modality_index("map")]))[0]
    assert not torch.allclose(a, b)


def test_lattice_offsets():
    off = lattice_offsets((1.0, 2.0), 9)
    assert off.shape == (2, 9, 2)
    assert off[1].abs().max() == 2.0 and torch.allclose(off[0].mean(0), torch.zeros(2))


def test_deformable_attention_shapes_gradients_and_soft_displacement():
    att = DeformableCrossAttention(16, radii=(1.0, 2.0), points=9)
    f, m = rand(2, 16, 8, 10), rand(2, 16, 8, 10)
    prior = torch.zeros(2, 2, 8, 10)
    attended, disp = assert_grads(att, f, m, prior)
    assert attended.shape == (2, 16, 8, 10) and disp.shape == (2, 2, 8, 10)
    # The displacement is a convex combination of the sampled offsets: inside the widest lattice.
    assert disp.abs().max() <= 2.0 + 1e-5
    offsets_grad = att.offsets.weight.grad
    assert offsets_grad is not None and offsets_grad.abs().sum() > 0  # offsets are learned from both streams


def test_attention_level_and_correlation_level():
    f, m = rand(1, 16, 8, 8), rand(1, 16, 8, 8)
    prior = torch.zeros(1, 2, 8, 8)
    field, hidden = assert_grads(AttentionLevel(16, (1.0, 2.0), 9, 16), f, m, prior)
    assert field.shape == (1, 2, 8, 8) and hidden.shape[-2:] == (8, 8)
    field, _ = assert_grads(CorrelationLevel(16, 2, 16), f, m, prior)
    assert field.shape == (1, 2, 8, 8)


def test_soft_argmax_reads_the_best_match():
    corr = torch.full((1, 25, 3, 3), -1.0)
    corr[:, 5 * (1 + 2) + (-2 + 2)] = 1.0  # the match at (dy, dx) = (1, -2)
    disp = soft_argmax(corr, 2, torch.tensor(50.0))
    assert torch.allclose(disp[0, :, 1, 1], torch.tensor([1.0, -2.0]), atol=1e-3)


def test_untrained_attention_points_towards_the_matching_features():
    """The cosine term makes the attention a soft arg-max of matching before any training."""
    att = DeformableCrossAttention(16, radii=(2.0, 2.0), points=9)
    f = torch.randn(1, 16, 12, 12, generator=GEN)
    m = torch.roll(f, shifts=(2, -2), dims=(2, 3))  # f(p) = m(p + (2, -2))
    with torch.no_grad():
        att.sharpness.fill_(50.0)
        _, disp = att(f, m, torch.zeros(1, 2, 12, 12))
    centre = disp[0, :, 4:8, 4:8].mean((1, 2))
    assert centre[0] > 1.0 and centre[1] < -1.0


def test_local_correlation_finds_a_shift():
    f = rand(1, 8, 12, 12)
    m = torch.roll(f, shifts=(1, -2), dims=(2, 3))  # m(p + (1, -2)) = f(p)
    corr = local_correlation(f, m, 2)
    best = corr[0, :, 4:8, 4:8].mean((1, 2)).argmax().item()
    assert divmod(best, 5) == (1 + 2, -2 + 2)


def test_warp_follows_contract_1():
    img = rand(1, 1, 10, 10)
    field = torch.zeros(1, 2, 10, 10)
    field[:, 1] = 1.0  # warped(y, x) = img(y, x + 1)
    assert torch.allclose(warp(img, field)[..., :-1], img[..., 1:], atol=1e-6)


def test_field_resampling_roundtrip():
    field = torch.ones(1, 2, 4, 4) * torch.tensor([1.0, -2.0])[None, :, None, None]
    up = upsample_field(field, (16, 16))
    assert torch.allclose(up, field.mean((2, 3), keepdim=True) * 4)
    assert torch.allclose(downsample_field(up, 4), field)


def test_refinement_is_confidence_gated():
    ref = AdaptiveRefinement(8, radius=1, hidden=8)
    torch.nn.init.normal_(ref.residual.weight, std=0.1)
    f, m = rand(1, 8, 8, 8), rand(1, 8, 8, 8)
    field = torch.zeros(1, 2, 8, 8)
    refined, logit = assert_grads(ref, f, m, field)
    assert refined.shape == (1, 2, 8, 8) and logit.shape == (1, 1, 8, 8)
    with torch.no_grad():
        ref.confidence.bias.fill_(50.0)  # full confidence: the field is kept
        kept, _ = ref(f, m, field)
    assert torch.allclose(kept, field, atol=1e-6)


@pytest.mark.parametrize("config", [DSMARConfig(), DSMARConfig(attention=False), DSMARConfig(refinement=False)])
def test_network_shapes_and_gradients(config):
    net = DSMAR(DSMARConfig(**{**config.__dict__, "channels": (8, 16, 16, 16), "hidden": 16}))
    x = rand(2, 2, 64, 48)
    ids = torch.tensor([0, 1])
    out = net(x, x, ids, ids)
    assert out.field.shape == (2, 2, 64, 48)
    assert out.confidence.shape == (2, 1, 64, 48)
    assert 0 <= out.confidence.min() and out.confidence.max() <= 1
    assert len(out.levels) == 4 + int(config.refinement)
    (out.field.sum() + out.confidence.sum()).backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None]
    # Only heads initialised at zero behind a zero head may see no gradient in one step.
    assert all("offsets" not in n for n in dead)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.encoder.moving.parameters())
