"""DS-MAR's learned fine matching stage: its MIND-SSC start, its sub-pixel matches on a real image, its training."""

import json

import numpy as np
import pytest
import torch

from datagen.pairs import load_aligned_pair, read_pairs
from datagen.warps import invert_warp
from kernel.fields import elastic_field
from kernel.warp import warp_image
from models import register_pair
from models.classical.matching import Matches, WindowGrid, _peaks
from models.classical.matching import median_test as classical_median_test
from models.dsmar import DSMAR, DSMARConfig
from models.dsmar.fine import COARSE, FAR_SHIFT, coarse_priors, distinct_starts, enlarge, learned_fine
from models.dsmar.infer import network_input
from models.dsmar.matching import (
    MIND_CHANNELS,
    NEWTON_STEPS,
    REPEAT_SIDE,
    SOFT_NORM,
    FineMatcher,
    MatchLevel,
    accumulated_dot,
    channel_dot,
    image_descriptors,
    median_test,
    newton_schedule,
    peak_offset,
    reduced_dot,
    window_costs,
)
from models.methods.mind import describe as mind_describe
from models.preprocess import block_means
from models.training.config import TrainConfig
from models.training.trainer import Trainer, stage_parameters
from tests.test_dsmar_training import synthetic_pack


def test_untrained_descriptors_are_the_centred_mind_channels():
    """At step 0 the stage is MIND matching: the learned residual and the extra channels start at zero."""
    image = torch.rand(1, 2, 48, 40, generator=torch.Generator().manual_seed(0))
    image[:, 1] = 1.0
    head = FineMatcher().fixed
    mind = image_descriptors(image)
    out = head(image, torch.tensor([0]), mind)
    centred = mind - mind.mean(1, keepdim=True)
    typical = centred.norm(dim=1).median()
    expected = centred / torch.sqrt(centred.norm(dim=1, keepdim=True) ** 2 + (SOFT_NORM * typical) ** 2)
    assert out.shape == (1, MIND_CHANNELS + head.extra, 48, 40)
    assert torch.allclose(out[:, :MIND_CHANNELS], expected, atol=1e-6) and out[:, MIND_CHANNELS:].abs().max() == 0


def test_descriptors_are_the_mind_window_matchers(optical):
    """The stage's MIND-SSC is the `mind` method's descriptor (the same channels, smoothing and normalisation), so
    the two matchers differ only in how they match: on a real image they agree away from the border."""
    gray = optical.mean(0)
    gray = (gray - gray.min()) / (gray.max() - gray.min())
    image = torch.from_numpy(np.stack([gray, np.ones_like(gray)]))[None].float()
    ours = image_descriptors(image)[0].numpy()
    theirs = mind_describe(gray)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    assert ours.shape == theirs.shape == (MIND_CHANNELS, *gray.shape)
    differ = np.abs(ours[inner] - theirs[inner])
    # equal to float precision but on 0.3 % of the pixels, almost flat ones, where the variance floors differ
    assert np.quantile(differ, 0.99) < 1e-5 and (differ.max(0) > 0.01).mean() < 0.01


def test_flat_ground_adds_nothing_to_a_match():
    """On a constant image every channel is the same, so the centred descriptor is zero: flat ground (a DEM's
    plains, calm water) neither attracts nor repels a window's match."""
    image = torch.ones(1, 2, 32, 32)
    image[:, 0] = 0.3
    out = FineMatcher().fixed(image, torch.tensor([0]), image_descriptors(image))
    assert out.abs().max() == 0


def test_near_flat_ground_keeps_a_short_descriptor(optical):
    """Where the image is all but flat, the centred MIND-SSC is noise around zero: the descriptor stays short
    there, while textured ground keeps about unit length (stretched to unit length, that noise drew a smooth
    DEM corner's windows to false matches)."""
    gray = optical.mean(0)
    gray = (gray - gray.min()) / (gray.max() - gray.min())
    noise = np.random.default_rng(0).normal(0, 1e-4, gray.shape)
    gray[:, gray.shape[1] // 2 :] = 0.5 + noise[:, gray.shape[1] // 2 :]
    image = torch.from_numpy(np.stack([gray, np.ones_like(gray)]))[None].float()
    with torch.no_grad():
        length = FineMatcher().fixed(image, torch.tensor([0]), image_descriptors(image))[0].norm(dim=0)
    half = gray.shape[1] // 2
    textured, flat = length[8:-8, 8 : half - 8], length[8:-8, half + 8 : -8]
    assert float(textured.median()) > 0.9 and float(flat.median()) < 0.1
    assert float(length.max()) <= 1 + 1e-6


@pytest.mark.parametrize("seed", range(5))
def test_confidence_is_the_window_matchers_distinctness(seed):
    """The torch stage judges a peak as the window matchers do (`models.classical.matching._peaks` on the
    negated surface), so its confidence is the same whatever the descriptors' contrast: random surfaces, some
    with a lone peak, some with a rival at 4 px, some flat, at two contrasts."""
    rng = np.random.default_rng(seed)
    radius, n = 5, 40
    side = 2 * radius + 1
    cost = rng.normal(0, 0.05, (n, side, side))
    for k in range(n):
        y, x = rng.integers(1, side - 1, 2)
        cost[k, y, x] += rng.choice([0.0, 0.1, 0.5])
        if k % 3 == 0:
            cost[k, (y + 4) % side, x] += 0.45
    theirs = _peaks(-cost, radius, (0, 0), 0.05)[1]
    for contrast in (1.0, 0.01):
        surface = torch.from_numpy(contrast * cost).float().reshape(n, side * side).T[None, :, :, None]
        ours = peak_offset(surface, radius)[1][0, 0, :, 0].numpy()
        assert np.allclose(ours, theirs, atol=1e-4)
    assert (theirs == 0).any() and (theirs > 0.5).any()


def test_a_peak_on_the_search_border_is_dropped():
    """The best offset at the edge of the +-r search says the match lies beyond it: confidence 0, as the window
    matchers reject it; an inner peak keeps its confidence."""
    side = 5
    cost = torch.zeros(1, side * side, 1, 2)
    cost[0, 0, 0, 0] = 1.0  # corner offset (-2, -2)
    cost[0, 2 * side + 3, 0, 1] = 1.0  # offset (0, 1), inside
    _, confidence = peak_offset(cost, 2)
    assert confidence[0, 0, 0, 0] == 0 and confidence[0, 0, 0, 1] > 0.9


def test_median_test_drops_what_the_window_matchers_drop():
    """A smooth lattice of shifts with three outliers and a hole: the torch median test drops exactly the
    outliers, as `models.classical.matching.median_test` does on the same lattice."""
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:9, 0:11] / 10.0
    shifts = np.stack([1.0 + yy, -0.5 + xx * 0.5], -1) + rng.normal(0, 0.05, (9, 11, 2))
    outliers = [(2, 3), (5, 8), (7, 1)]
    for y, x in outliers:
        shifts[y, x] += (4.0, -3.0)
    shifts[4, 4] = np.nan
    lattice = torch.from_numpy(np.moveaxis(shifts, -1, 0))[None].float()
    ours = median_test(lattice, torch.from_numpy(np.isfinite(shifts[..., 0]))[None, None])[0, 0].numpy()
    theirs = classical_median_test(Matches(WindowGrid(0, 0, 1, 9, 11), shifts, np.ones((9, 11))))
    kept = np.isfinite(theirs.shifts[..., 0])
    assert sorted(zip(*np.nonzero(~kept & np.isfinite(shifts[..., 0])))) == outliers
    assert np.array_equal(ours > 0, kept)


def _brute_window_costs(fixed: np.ndarray, moved: np.ndarray, lv: MatchLevel) -> tuple[np.ndarray, np.ndarray]:
    """`window_costs` by its definition, in loops: the moving stack shifted by each whole-pixel offset (zeros
    outside), both stacks' k x k cell means, the channel dot product and the both-valid share summed over each
    window of cells on the lattice."""
    k, r = lv.pool, lv.radius
    c, h, w = fixed.shape
    hp, wp = -(-h // k), -(-w // k)

    def cells(x: np.ndarray) -> np.ndarray:
        padded = np.zeros((c, hp * k, wp * k))
        padded[:, :h, :w] = x
        return padded.reshape(c, hp, k, wp, k).mean((2, 4))

    half, step = -(-lv.window // k) // 2, lv.step // k
    centres_y, centres_x = range(0, hp, step), range(0, wp, step)
    f = cells(fixed)
    costs = np.zeros(((2 * r + 1) ** 2, len(centres_y), len(centres_x)))
    for i, (dy, dx) in enumerate(np.ndindex(2 * r + 1, 2 * r + 1)):
        shifted = np.zeros_like(moved)
        oy, ox = dy - r, dx - r
        shifted[:, max(0, -oy) : h - max(0, oy), max(0, -ox) : w - max(0, ox)] = moved[
            :, max(0, oy) : h + min(0, oy), max(0, ox) : w + min(0, ox)
        ]
        m = cells(shifted)
        dot, both = (f[:-1] * m[:-1]).sum(0), f[-1] * m[-1]
        for a, y in enumerate(centres_y):
            for b, x in enumerate(centres_x):
                window = (slice(max(0, y - half), y + half + 1), slice(max(0, x - half), x + half + 1))
                costs[i, a, b] = dot[window].sum() / max(both[window].sum(), 1e-3)
    both = f[-1] * cells(moved)[-1]
    support = np.array(
        [
            [both[max(0, y - half) : y + half + 1, max(0, x - half) : x + half + 1].mean() for x in centres_x]
            for y in centres_y
        ]
    )
    return costs, support


@pytest.mark.parametrize("pool", [1, 2])
def test_window_costs_are_window_means_of_cell_products_at_whole_pixel_offsets(pool):
    """Direct products (pool 1) and products of 2 x 2 cell means, with part of each stream invalid, against
    the definition computed in loops (on a whole number of cells: a last partial cell reads the moving
    stack's pixels beyond the fixed image's edge)."""
    rng = np.random.default_rng(pool)
    stacks = []
    for _ in range(2):
        valid = np.ones((1, 38, 28))
        valid[:, rng.integers(0, 38, 60), rng.integers(0, 28, 60)] = 0
        stacks.append(np.concatenate([rng.normal(size=(3, 38, 28)) * valid, valid]))
    lv = MatchLevel(1, 2, 7, 6, pool)
    costs, support = window_costs(*(torch.from_numpy(x)[None].float() for x in stacks), lv)
    want_costs, want_support = _brute_window_costs(stacks[0], stacks[1], lv)
    assert np.allclose(costs[0].numpy(), want_costs, atol=1e-4)
    assert np.allclose(support[0, 0].numpy(), want_support, atol=1e-5)


def test_window_costs_cost_a_few_operations_per_row_of_offsets_not_per_offset():
    """On a GPU every operation is a kernel launch: a pass of +-7 px (225 offsets) dispatching a dozen operations
    per offset would spend more time launching than computing on a megapixel."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counting(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.count += 1
            return func(*args, **(kwargs or {}))

    def operations(radius: int) -> int:
        stacks = (torch.rand(1, MIND_CHANNELS + 1, 64, 64) for _ in range(2))
        with Counting() as counting:
            window_costs(*stacks, MatchLevel(1, radius, 17, 8, 1))
        return counting.count

    more_offsets = 15**2 - 7**2
    assert (operations(7) - operations(3)) / more_offsets < 8  # one operation per channel and offset: over 10


@pytest.mark.parametrize("broadcast", [False, True])
def test_both_schedules_of_the_channel_dot_agree(broadcast):
    """The CPU's per-channel accumulation and the GPU's product and reduction are one formula: over plain
    (B, C, H, W) maps, and over `window_costs`' (B, C, 1, H, W) x overlapping (B, C, n, H, W) views."""
    generator = torch.Generator().manual_seed(1)
    a = torch.rand(2, MIND_CHANNELS, 30, 40, generator=generator)
    b = torch.rand(2, MIND_CHANNELS, 30, 44, generator=generator)
    if broadcast:
        a, b = a[:, :, None], b.unfold(3, 40, 1)[:, :, :, :5].movedim(3, 2)
    else:
        b = b[..., :40]
    want = (a * b).double().sum(1, keepdim=True)
    for schedule in (accumulated_dot, reduced_dot):
        got = schedule(a, b)
        assert got.shape == want.shape and got.is_contiguous()
        assert torch.allclose(got.double(), want, rtol=1e-6, atol=1e-5)
    assert torch.equal(channel_dot(a, b), accumulated_dot(a, b))  # on this CPU


@pytest.fixture(scope="module")
def optical(pairs_dir):
    record = next(r for r in read_pairs(pairs_dir, "train") if r.category == "optical-optical")
    return load_aligned_pair(record).fixed


def optical_inputs(*images: np.ndarray) -> tuple[torch.Tensor, ...]:
    """The network inputs of optical images."""
    return tuple(network_input(torch.from_numpy(np.ascontiguousarray(x)), "optical") for x in images)


def fine_stage(matcher, inputs, start: np.ndarray, confidence: np.ndarray, *args) -> tuple[np.ndarray, np.ndarray]:
    """`learned_fine` on the CPU, from and to numpy, for a start field followed as it is (`trend="field"`)."""
    start_t, confidence_t = (torch.from_numpy(np.ascontiguousarray(x)) for x in (start, confidence))
    field, conf = learned_fine(matcher, *inputs, (0, 0), start_t, confidence_t, "field", *args)
    return field.numpy(), conf.numpy()


def _gap(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().amax())


@pytest.mark.parametrize("seed", range(5))
def test_starts_closer_than_the_tolerance_everywhere_share_one_first_pass(seed):
    """Kept starts differ by more than the tolerance somewhere; each dropped one is within it everywhere of a
    kept one, and the first start is always kept."""
    rng = np.random.default_rng(seed)
    base = torch.from_numpy(rng.normal(0, 3, (1, 2, 8, 8)).astype(np.float32))
    starts = [
        base + float(rng.uniform(-3, 3)) + torch.from_numpy(rng.normal(0, 0.2, (1, 2, 8, 8))).float() for _ in range(6)
    ]
    kept = distinct_starts(starts, 2.0)
    assert kept[0] is starts[0]
    assert all(_gap(a, b) > 2.0 for i, a in enumerate(kept) for b in kept[:i])
    assert all(any(_gap(s, k) <= 2.0 for k in kept) for s in starts if not any(s is k for k in kept))


@pytest.mark.parametrize("side", [2 * COARSE.window * COARSE.factor, 2 * COARSE.window * COARSE.factor - 4])
@pytest.mark.parametrize("seed", range(4))
def test_the_coarse_search_looks_around_the_start_and_far_priors_once(side, seed):
    """A wide image is searched around the start itself, a narrower one around the start's shift at the centre (a
    constant field); no motion and the global shift are added only where they lie beyond `FAR_SHIFT` of every
    centre before them."""
    rng = np.random.default_rng(seed)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    first = torch.stack([0.01 * yy + float(rng.uniform(-30, 30)), -0.01 * xx + float(rng.uniform(-30, 30))])[None]
    shift = tuple(float(v) for v in rng.uniform(-40, 40, 2))
    priors = coarse_priors(first, shift)
    centres = [tuple(p[0, :, side // 2, side // 2].tolist()) for p in priors]
    wide = side >= 2 * COARSE.window * COARSE.factor
    assert (priors[0] is first) == wide and all(p.shape == first.shape for p in priors)
    assert all(float(p.std((2, 3)).max()) == 0 for p in priors[int(wide) :])
    assert np.allclose(centres[0], first[0, :, side // 2, side // 2].tolist())
    assert all(np.hypot(a[0] - b[0], a[1] - b[1]) > FAR_SHIFT for i, a in enumerate(centres) for b in centres[:i])
    for candidate in ((0.0, 0.0), shift):  # searched around, or near a centre that is
        assert min(np.hypot(candidate[0] - c[0], candidate[1] - c[1]) for c in centres) <= FAR_SHIFT + 1e-4


@pytest.mark.parametrize("factor", [2, 4])
def test_a_field_of_the_shrunk_pair_enlarged_is_the_same_motion_at_full_resolution(factor):
    """Block means, and a linear field of the shrunk grid read at full resolution: small pixel c is centred on full
    pixel factor (c + 0.5) - 0.5, its vectors are factor times longer; a last partial block repeats its neighbour."""
    image = np.random.default_rng(factor).random((2, 4 * 9 + 3, 4 * 7 + 1)).astype(np.float32)
    small = block_means(torch.from_numpy(image), factor).numpy()
    h, w = small.shape[1:]
    assert (h, w) == (image.shape[1] // factor, image.shape[2] // factor)
    blocks = image[:, : h * factor, : w * factor].reshape(2, h, factor, w, factor).mean((2, 4))
    assert np.allclose(small, blocks)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.stack([0.3 * yy - 0.1 * xx + 1.5, 0.05 * yy + 0.2 * xx - 0.5])
    confidence = torch.full((h, w), 0.5)
    full, conf = (x.numpy() for x in enlarge(torch.from_numpy(field), confidence, image.shape[1:], factor))
    assert full.shape == (2, *image.shape[1:]) and conf.shape == image.shape[1:] and np.allclose(conf, 0.5)
    py, px = np.mgrid[0 : image.shape[1], 0 : image.shape[2]].astype(np.float32)
    sy, sx = (py + 0.5) / factor - 0.5, (px + 0.5) / factor - 0.5  # full pixel centres on the small grid
    want = factor * np.stack([0.3 * sy - 0.1 * sx + 1.5, 0.05 * sy + 0.2 * sx - 0.5])
    inner = (slice(None), slice(factor, (h - 1) * factor), slice(factor, (w - 1) * factor))
    assert np.allclose(full[inner], want[inner], atol=1e-4)


def test_untrained_stage_recovers_a_sub_pixel_shift_of_a_real_image(optical):
    """A translation of a real image, from a start 1.5 px off on both axes: found to a fraction of a pixel."""
    truth = np.array([3.3, -2.6], np.float32)[:, None, None]
    moving = warp_image(optical, -np.broadcast_to(truth, (2, *optical.shape[1:])))  # fixed(p) = moving(p + t)
    start = np.broadcast_to(truth + 1.5, (2, *optical.shape[1:])).astype(np.float32)
    inputs = optical_inputs(optical, moving)
    confidence = np.ones(optical.shape[1:], np.float32)
    field, conf = fine_stage(FineMatcher(), inputs, start, confidence)
    inner = (slice(None), slice(48, -48), slice(48, -48))
    error = np.hypot(*(field - truth)[inner])
    assert np.median(error) < 0.3, np.median(error)  # measured 0.20 (parabola peaks on 65 px windows)
    assert conf.shape == optical.shape[1:] and 0 <= conf.min() and conf.max() <= 1


@pytest.mark.parametrize("seed", range(2))
def test_gauss_newton_steps_follow_detail_the_window_passes_smooth_away(optical, seed):
    """A smooth elastic warp of a real image (3 px at most, correlated over a quarter of the image): passes on
    65 px windows every 24 px read it to a tenth of a pixel or worse; the Gauss-Newton steps after the first pass,
    the last on 33 px windows, follow it to a few hundredths."""
    warp = elastic_field(optical.shape[1:], np.random.default_rng(seed), 3.0, max(optical.shape[1:]) / 4)
    truth = invert_warp(warp)  # moving(q) = optical(q + warp(q)), so fixed(p) = moving(p + truth(p))
    inputs = optical_inputs(optical, warp_image(optical, warp))
    start, confidence = np.zeros_like(truth), np.ones(optical.shape[1:], np.float32)
    inner = (slice(None), slice(48, -48), slice(48, -48))
    errors = []
    for radii, newton in (((5, 3), 0), ((5,), len(NEWTON_STEPS))):
        field, conf = fine_stage(None, inputs, start, confidence, radii, newton)
        errors.append(float(np.median(np.hypot(*(field - truth)[inner]))))
        assert 0 <= conf.min() and conf.max() <= 1
    assert errors[1] < 0.06 and errors[1] < errors[0] / 2, errors  # measured 0.036 against 0.09-0.11


@pytest.mark.parametrize("seed", range(2))
def test_repeated_steps_follow_a_warp_too_fine_for_one_on_a_small_image(optical, seed):
    """A 176 px image under an elastic warp correlated over an eighth of its side (3 px at most): the last
    Gauss-Newton step, repeated 6 times, follows it to about half the error of the steps run once."""
    small = optical[:, :176, :176]
    warp = elastic_field(small.shape[1:], np.random.default_rng(seed), 3.0, 176 / 8)
    truth = invert_warp(warp)
    inputs = optical_inputs(small, warp_image(small, warp))
    start, confidence = np.zeros_like(truth), np.ones(small.shape[1:], np.float32)
    inner = (slice(None), slice(24, -24), slice(24, -24))
    errors = []
    for repeat in (0, 6):
        field, _ = fine_stage(None, inputs, start, confidence, (5,), 2, repeat)
        errors.append(float(np.median(np.hypot(*(field - truth)[inner]))))
    assert errors[1] < 0.7 * errors[0], errors  # measured 0.37 against 0.67, 0.40 against 0.70


def test_retrend_spreads_the_first_pass_around_the_trend_it_found_where_windows_are_missing(optical):
    """A real image shifted by a constant, a flat block (no window matches there) and a start 1.8 px off: the first
    pass corrects the textured ground, and the block keeps the start's error; spread around the trend of what the
    pass found (`retrend`), the block takes the shift the textured ground agrees on."""
    image = optical.copy()
    block = (slice(None), slice(64, 320), slice(64, 320))
    image[block] = np.nanmean(image[block], axis=(1, 2), keepdims=True)
    truth = np.array([2.4, -1.7], np.float32)[:, None, None]
    moving = warp_image(image, -np.broadcast_to(truth, (2, *image.shape[1:])))
    inputs = optical_inputs(image, moving)
    start = np.broadcast_to(truth + np.array([1.5, -1.0], np.float32)[:, None, None], (2, *image.shape[1:])).copy()
    confidence = np.ones(image.shape[1:], np.float32)
    inside = (slice(None), slice(152, 232), slice(152, 232))
    errors = []
    for retrend in (False, True):
        field, conf = fine_stage(None, inputs, start, confidence, (5,), 0, 0, retrend)
        errors.append(float(np.median(np.hypot(*(field - truth)[inside]))))
        assert 0 <= conf.min() and conf.max() <= 1
    assert errors[0] > 1.5 and errors[1] < 0.3, errors  # measured 1.78 against 0.09


def test_only_images_under_the_repeat_side_repeat_the_last_step():
    """The schedule: the first `newton` steps, the last of them `repeat` times more below `REPEAT_SIDE` px a side,
    and no steps to repeat without `newton`."""
    small, large = (REPEAT_SIDE - 1, 4 * REPEAT_SIDE), (REPEAT_SIDE, REPEAT_SIDE)
    assert newton_schedule(2, 3, small) == NEWTON_STEPS + (NEWTON_STEPS[-1],) * 3
    assert newton_schedule(1, 2, small) == (NEWTON_STEPS[0],) * 3
    assert newton_schedule(2, 3, large) == NEWTON_STEPS
    assert newton_schedule(0, 3, small) == ()


def test_the_untrained_stage_matches_the_same_without_running_its_heads(optical):
    """`fine="init"` skips the untrained heads (their residual and extra channels are zero): the same field."""
    truth = np.array([2.4, -1.7], np.float32)[:, None, None]
    moving = warp_image(optical, -np.broadcast_to(truth, (2, *optical.shape[1:])))
    start = np.zeros((2, *optical.shape[1:]), np.float32)
    inputs = optical_inputs(optical, moving)
    confidence = np.ones(optical.shape[1:], np.float32)
    full, lean = (fine_stage(matcher, inputs, start, confidence) for matcher in (FineMatcher(), None))
    assert np.allclose(full[0], lean[0], atol=1e-4) and np.allclose(full[1], lean[1], atol=1e-4)


def test_the_passes_after_the_first_spread_their_residual_wider(optical):
    """A narrower pass that follows a first one (`first=False`) spreads the same window matches by a Gaussian
    `REFINE_SPREAD` times wider: a smoother residual, as accurate (a real image against its shifted negative)."""
    truth = np.array([1.6, -1.2], np.float32)[:, None, None]
    moving = 1.0 - warp_image(optical, -np.broadcast_to(truth, (2, *optical.shape[1:])))
    f, m = (network_input(torch.from_numpy(x), "optical")[None] for x in (optical, moving))
    matcher = FineMatcher(extra=0)
    ids = torch.tensor([0])
    start = torch.from_numpy(np.broadcast_to(truth + 0.8, (1, 2, *f.shape[-2:])).copy())
    with torch.no_grad():
        desc_f, desc_m = matcher.describe(f, m, ids, ids)
        first, later = (
            matcher.passes(desc_f, desc_m, f[:, 1:2], m[:, 1:2], start, (3,), first=flag).field[0].numpy()
            for flag in (True, False)
        )
    inner = (slice(None), slice(48, -48), slice(48, -48))

    def roughness(field: np.ndarray) -> float:
        return float(np.abs(np.diff(field[inner], axis=1)).mean() + np.abs(np.diff(field[inner], axis=2)).mean())

    def error(field: np.ndarray) -> float:
        return float(np.median(np.hypot(*(field - truth)[inner])))

    assert roughness(later) < 0.7 * roughness(first), (roughness(later), roughness(first))  # measured 0.52 x
    assert error(later) < 1.1 * error(first) + 0.02, (error(later), error(first))  # measured 0.058 / 0.056 px


def test_match_stage_trains_only_the_matcher(tmp_path):
    synthetic_pack(tmp_path / "pack.npz")
    data = json.loads(open("configs/train_match_cpu.json").read())
    data.update(
        pack=str(tmp_path / "pack.npz"),
        out=str(tmp_path / "run"),
        init="",
        crop=64,
        margin=16,
        batch=2,
        val_batches=1,
        model={"channels": [8, 16, 16, 16], "hidden": 16, "refine_hidden": 8, "matching": True},
        nodata=1.0,  # every crop has a no-data region, whose descriptors are zero
        stages=[{"name": "match", "steps": 2, "lr": 0.01}],
    )
    trainer = Trainer(TrainConfig.from_dict(data), log=lambda _: None)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    record = trainer.run()["record"]
    after = trainer.model.state_dict()
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"matcher"}
    assert all(torch.isfinite(v).all() for v in after.values())  # no-data pixels' zero descriptors: finite gradients
    assert record["history"][0]["stage"] == "match" and "val_epe_median" in record["history"][0]
    assert {id(p) for p in stage_parameters(trainer.model, "match")} == {
        id(p) for p in trainer.model.matcher.parameters()
    }


def test_network_runs_its_matching_stage_unless_told_not_to():
    model = DSMAR(DSMARConfig(channels=(8, 16, 16, 16), hidden=16, refine_hidden=8, matching=True))
    x = torch.rand(1, 2, 64, 64, generator=torch.Generator().manual_seed(2))
    x[:, 1] = 1.0
    ids = torch.tensor([0])
    with torch.no_grad():
        full, bare = model(x, x, ids, ids), model(x, x, ids, ids, match=False)
    assert len(full.matched) == len(model.matcher.levels) and not bare.matched
    assert full.field.shape == bare.field.shape == (1, 2, 64, 64)
    assert 0 <= float(full.confidence.min()) and float(full.confidence.max()) <= 1


@pytest.mark.parametrize("options", [{"fine": "init"}, {"fine": "init", "scale": 2, "trend": "best"}])
def test_the_learned_fine_stage_keeps_the_method_contract(options):
    """Contract 2 on the learned fine path: the smallest odd image, no-data in both streams, a finite field."""
    rng = np.random.default_rng(0)
    fixed = rng.random((64, 77)).astype(np.float32)
    moving = np.roll(fixed, 2, axis=1)
    fixed[:20, :30] = np.nan
    moving[:, 40:50] = np.nan
    result = register_pair(fixed, moving, "optical", "sar", method="dsmar", augment=1, **options)
    assert result.displacement.shape == (2, 64, 77) and np.isfinite(result.displacement).all()
    assert 0 <= result.confidence.min() and result.confidence.max() <= 1


def test_the_method_offers_every_gauss_newton_step_and_no_more():
    from models.methods.dsmar import OPTIONS

    assert OPTIONS["newton"](len(NEWTON_STEPS)) == len(NEWTON_STEPS)
    with pytest.raises(ValueError, match="must be one of"):
        OPTIONS["newton"](len(NEWTON_STEPS) + 1)
    assert OPTIONS["repeat"](8) == 8
    with pytest.raises(ValueError, match="must be one of"):
        OPTIONS["repeat"](9)
