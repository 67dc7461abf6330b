"""DS-MAR's learned fine matching: dual-stream dense descriptors and window correlation, in torch.

Each stream has its own small descriptor head on [gray, validity, MIND-SSC] (separate weights, a modality
FiLM as in the encoders). Its output is the image's centred MIND-SSC channels plus a learned residual and
learned extra channels, all starting at zero, normalised softly (`SOFT_NORM`): at initialisation the stage is
MIND matching, and training can only add to it.

A level matches the fixed descriptors against the moving ones warped by the field so far: their dot
product at every integer offset within `radius` (at the level's resolution; on 2 x 2 cell means) is
averaged over square windows on a lattice (window matching's robustness: a window of texture agrees where
single pixels do not). A parabola through the best offset and its neighbours gives the sub-pixel residual
(a soft arg-max snapped to whole pixels: 2.95 px read for a 3.3 px shift), and its distinctness, as the
window matchers judge a peak, its confidence. As in the window matchers of `models.classical`, a
window whose best offset lies on the search border, or whose shift is unlike its neighbours' (normalised
median test), is dropped, and the others are spread to every pixel by confidence-weighted normalised
convolution (a Gaussian of one lattice cell, two after the first pass), pulled towards no residual where their
support is thin, then composed after the field (Contract 1). After the passes, Gauss-Newton steps
(`newton_refine`) solve each window's remaining shift from the descriptors' difference and gradients, without an
offset search, so on smaller windows that follow the field's detail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field

import torch
from torch import nn
from torch.nn import functional as F

from models.api import MODALITIES
from models.classical.features import PATCH_SIGMA
from models.classical.interpolate import MIN_WEIGHT, PRIOR_SHARE
from models.classical.matching import MEDIAN_NOISE, MEDIAN_THRESHOLD, RUNNER_UP_GAP
from models.classical.register import WindowConfig
from models.dsmar.flow import base_grid, downsample_field, sample_at, warp
from models.losses import pair_differences, self_similarity

MIND_CHANNELS = 10


@dataclass(frozen=True)
class MatchLevel:
    """One pass: descriptors pooled `factor` x, offsets up to `radius` level pixels, windows of `window`
    level pixels every `step` level pixels, their products taken on `pool` x `pool` cell means
    (`window_costs`)."""

    factor: int
    radius: int
    window: int
    step: int
    pool: int = 1

    def __post_init__(self) -> None:
        if self.step % self.pool:
            raise ValueError(f"a lattice step of {self.step} px is not a whole number of {self.pool} px cells")

    @property
    def lattice(self) -> tuple[int, int]:
        """(step, factor) of the lattice the costs come on: pooled products put it on the pooled grid."""
        return (self.step // self.pool, self.factor * self.pool)


# One full-resolution level, +-5 px, windows of 65 px every 24 px (as the `mind` fine stage): a half-resolution
# level first and a second pass both made the fields noisier (benchmarks/tuning.md). Products on 2 x 2 cell
# means at whole-pixel offsets: a pass in half the time, level on 18 train pairs (benchmarks/tuning.md).
LEVELS = (MatchLevel(1, 5, 65, 24, 2),)
# The passes after the first spread their residual by a Gaussian this many times wider: they correct what the
# first left broadly wrong, while their cell-to-cell noise moved exact truth away (benchmarks/tuning.md).
REFINE_SPREAD = 2.0


@dataclass(frozen=True)
class NewtonStep:
    """One Gauss-Newton step after the window passes: the residual shift solved by least squares over windows of
    `window` px every `step` px (`newton_matches`), spread by a Gaussian of `spread` lattice cells; with `pool` k > 1
    on both streams' k x k cell means (the moving ones warped by the field's cell means: a step in a third of the
    time on a 628 px pair), windows of ceil(window / k) cells. Bilinear warping at the coarser resolution biases a
    pooled step by up to a tenth of a pixel towards whole cells on a sub-pixel shift: a full-resolution step after
    it takes that out."""

    window: int
    step: int
    spread: float
    pool: int = 1

    def __post_init__(self) -> None:
        if self.step % self.pool:
            raise ValueError(f"a lattice step of {self.step} px is not a whole number of {self.pool} px cells")


# The method's `newton` steps (tuned apart from the window passes, whose window, step and spread the first repeats):
# the 65 px windows smooth the field's detail; a step on 65 px windows, then one on 33 px windows, solve the
# shift from the descriptors' gradients instead (benchmarks/tuning.md). The first runs on 2 x 2 cell means (the
# demo's SAR median 0.221 -> 0.228 px; both pooled: 0.246); `newton=1` runs it alone, with its bias of up to 0.1 px
# (`NewtonStep`). `models.methods.dsmar` offers 0 to this many.
NEWTON_STEPS = (NewtonStep(65, 24, 2.0, 2), NewtonStep(33, 12, 1.0))
# px: on images whose smaller side is under this, the last step runs again the method's `repeat` times
# (`newton_schedule`). A deformation that varies over a given share of an image varies over fewer pixels on a
# small one, finer than one damped 33 px step follows (it recovers a 50 px wave to an eighth), and each repeat
# takes in more of it; on larger images the repeats follow the descriptors' noise instead (benchmarks/tuning.md).
REPEAT_SIDE = 256
# A step's normal equations (sums over the window's pixels and the descriptors' channels) get this times the
# window's mean squared descriptor difference (a mean over both) on their diagonal: windows whose streams differ
# much (speckle, another modality's texture) move less. Relative to the sums, the damping is stronger on smaller
# windows and on fewer channels: it was tuned on these steps and the 10 MIND-SSC channels (benchmarks/tuning.md).
NEWTON_DAMPING = 400.0
# px: a window's step beyond this lies outside the linearisation; the window is dropped.
NEWTON_REACH = 1.0
# A descriptor is divided by sqrt(|d|^2 + (SOFT_NORM * the image's median |d|)^2), not by |d|: near-flat ground,
# whose centred MIND-SSC is noise around zero, keeps a short descriptor instead of noise stretched to unit
# length, which drew the windows of a smooth DEM corner to false matches (benchmarks/tuning.md).
SOFT_NORM = 0.3


def image_descriptors(image: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) [gray, validity] -> (B, 10, H, W) MIND-SSC of the gray, 0 where invalid: the handcrafted
    prior of the descriptor heads, the `mind` window matcher's descriptor (`models.classical.features.mind_ssc`:
    patch radius 1, dilation 1, the 10 pairs with the centre, the patch distances smoothed, not taken relative
    to their smallest, so flat ground adds nothing to a match). The patch mean and the smoothing are one
    separable filter (`PATCH_KERNEL`, replicate borders)."""
    squared = pair_differences(image[:, :1].float(), dilation=1, centre=True)
    distances = separable_filter(squared, PATCH_KERNEL)
    return self_similarity(distances, relative=False) * image[:, 1:2]


def gaussian_taps(sigma: float) -> torch.Tensor:
    """1-D taps of a Gaussian of `sigma` truncated at 3 sigma, summing to one (float64)."""
    r = math.ceil(3 * sigma)
    x = torch.arange(-r, r + 1, dtype=torch.float64)
    gauss = torch.exp(-0.5 * (x / sigma) ** 2)
    return gauss / gauss.sum()


def patch_kernel(radius: int, sigma: float) -> torch.Tensor:
    """1-D taps of a (2 radius + 1) px box mean followed by a Gaussian of `sigma` truncated at 3 sigma: a patch
    distance smoothed as `models.classical.features.mind_ssc` smooths it, in one pass per axis."""
    box = torch.full((1, 1, 2 * radius + 1), 1.0 / (2 * radius + 1), dtype=torch.float64)
    return F.conv1d(F.pad(gaussian_taps(sigma), (2 * radius, 2 * radius))[None, None], box)[0, 0].float()


PATCH_KERNEL = patch_kernel(1, PATCH_SIGMA)


def separable_filter(x: torch.Tensor, taps: torch.Tensor) -> torch.Tensor:
    """The same odd 1-D filter along both axes of every channel of (B, C, H, W), replicate borders, as weighted sums
    of shifted slices (on a CPU a third of the time of a depthwise convolution)."""
    r = taps.numel() // 2
    weights = taps.tolist()
    for axis in (3, 2):
        size = x.shape[axis]
        padded = F.pad(x, (r, r, 0, 0) if axis == 3 else (0, 0, r, r), mode="replicate")
        x = padded.narrow(axis, 0, size) * weights[0]
        for i in range(1, len(weights)):
            x.add_(padded.narrow(axis, i, size), alpha=weights[i])
    return x


def blur_channels(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian of `sigma` (truncated at 3 sigma) on every channel of (B, C, H, W), replicate borders."""
    return separable_filter(x, gaussian_taps(sigma))


class DescriptorHead(nn.Module):
    """One stream: (B, 2, H, W) [gray, validity] and its MIND-SSC -> (B, 10 + extra, H, W), at most unit length
    (`soft_normalise`)."""

    def __init__(self, extra: int = 6, hidden: int = 8):
        super().__init__()
        self.extra = extra
        self.stem = nn.Conv2d(2 + MIND_CHANNELS, hidden, 3, padding=1)
        self.film = nn.Embedding(len(MODALITIES), 2 * hidden)
        self.body = nn.Sequential(nn.Conv2d(hidden, hidden, 3, padding=2, dilation=2), nn.LeakyReLU(0.1, inplace=True))
        self.head = nn.Conv2d(hidden, MIND_CHANNELS + extra, 3, padding=1)
        for zero in (self.film.weight, self.head.weight, self.head.bias):
            nn.init.zeros_(zero)

    def forward(self, image: torch.Tensor, modality: torch.Tensor, mind: torch.Tensor) -> torch.Tensor:
        valid = image[:, 1:2].float()
        x = self.stem(torch.cat([image.float(), mind], 1))
        gamma, beta = self.film(modality).chunk(2, dim=1)
        x = F.leaky_relu(x * (1 + gamma[:, :, None, None]) + beta[:, :, None, None], 0.1)
        prior = F.pad(centred(mind), (0, 0, 0, 0, 0, self.extra))
        return soft_normalise((prior + self.head(self.body(x))) * valid, valid)


def mind_descriptors(image: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W) [gray, validity] -> (B, 10, H, W): what untrained heads give without their extra channels
    (zero until trained), computed without running them: the centred MIND-SSC, softly normalised."""
    valid = image[:, 1:2].float()
    return soft_normalise(centred(image_descriptors(image)) * valid, valid)


def centred(mind: torch.Tensor) -> torch.Tensor:
    """MIND-SSC channels less their mean at each pixel: flat ground, all channels alike, becomes zero."""
    return mind - mind.mean(1, keepdim=True)


def soft_normalise(desc: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) descriptors divided by sqrt(|d|^2 + (SOFT_NORM * m)^2), m the median length over each image's
    valid pixels: textured pixels near unit length, flat ones short (0 stays 0). Squared lengths throughout (a
    tenth of `Tensor.norm`'s time over channels on a CPU), clamped inside the root: a zero descriptor (no-data)
    gets a zero gradient, not 0 x inf."""
    squared = (desc * desc).sum(1, keepdim=True)
    typical = torch.where(valid > 0, squared, torch.nan).flatten(1).nanmedian(1).values.nan_to_num(0.0)
    return desc / torch.sqrt((squared + SOFT_NORM**2 * typical.view(-1, 1, 1, 1)).clamp_min(1e-24))


@dataclass(frozen=True)
class Matched:
    """A matching run: the final field (B, 2, H, W), its confidence (B, 1, H, W) in [0, 1], the field
    after every level (full resolution), for training, and every window pass's lattice matches (shift
    (B, 2, h, w), confidence (B, 1, h, w), before the median test), which `models.dsmar.fine.retrended` spreads
    again around their own trend."""

    field: torch.Tensor
    confidence: torch.Tensor
    levels: list[torch.Tensor]
    matches: list[tuple[torch.Tensor, torch.Tensor]] = dataclass_field(default_factory=list)


class FineMatcher(nn.Module):
    """(fixed, moving (B, 2, H, W), modality ids, prior field (B, 2, H, W)) -> `Matched`."""

    def __init__(self, extra: int = 6, hidden: int = 8, levels: tuple[MatchLevel, ...] = LEVELS):
        super().__init__()
        self.levels = levels
        self.fixed = DescriptorHead(extra, hidden)
        self.moving = DescriptorHead(extra, hidden)

    def describe(self, fixed, moving, fixed_modality, moving_modality) -> tuple[torch.Tensor, torch.Tensor]:
        """Both streams' descriptors."""
        return (
            self.fixed(fixed, fixed_modality, image_descriptors(fixed)),
            self.moving(moving, moving_modality, image_descriptors(moving)),
        )

    def forward(self, fixed, moving, fixed_modality, moving_modality, prior: torch.Tensor) -> Matched:
        desc_f, desc_m = self.describe(fixed, moving, fixed_modality, moving_modality)
        return self.match(desc_f, desc_m, fixed[:, 1:2], moving[:, 1:2], prior)

    def match(
        self, desc_f, desc_m, valid_f, valid_m, prior: torch.Tensor, levels: int | None = None, first: int = 0
    ) -> Matched:
        """The field `prior` corrected by levels `first` up to `levels` (all by default)."""
        last = len(self.levels) if levels is None else levels
        steps = [(self.levels[i], WindowConfig.sigma_cells) for i in range(first, last)]
        return self._passes(desc_f, desc_m, valid_f, valid_m, prior, steps)

    def passes(
        self, desc_f, desc_m, valid_f, valid_m, prior: torch.Tensor, radii: tuple[int, ...], first: bool = True
    ) -> Matched:
        """The field `prior` corrected by one pass of the first level per search radius in `radii` (the method's
        `polish`): a first wide search, then narrower ones around what it found, whose residual is spread
        `REFINE_SPREAD` times wider (all of them with `first=False`: they follow an earlier call's first pass)."""
        level, sigma = self.levels[0], WindowConfig.sigma_cells
        steps = [
            (replace(level, radius=r), sigma if first and i == 0 else REFINE_SPREAD * sigma)
            for i, r in enumerate(radii)
        ]
        return self._passes(desc_f, desc_m, valid_f, valid_m, prior, steps)

    def _passes(self, desc_f, desc_m, valid_f, valid_m, prior, steps: list[tuple[MatchLevel, float]]) -> Matched:
        """`prior` corrected by each (level, Gaussian of the residual's spread in lattice cells) of `steps` in
        turn."""
        field, confidence, fields, matches = prior.float(), None, [], []
        for lv, sigma in steps:
            shift, confidence = lattice_matches(desc_f, desc_m, valid_f, valid_m, field, lv)
            matches.append((shift, confidence))
            field, confidence = correct(field, shift, confidence, *lv.lattice, sigma)
            fields.append(field)
        if confidence is None:
            confidence = torch.ones_like(prior[:, :1])
        return Matched(field, confidence * valid_f.float(), fields, matches)


def lattice_matches(desc_f, desc_m, valid_f, valid_m, field, lv: MatchLevel):
    """The residual shift (B, 2, h', w') in full-resolution pixels of every window of level `lv` on the lattice,
    after the moving descriptors are warped by `field`, and its confidence (B, 1, h', w') in [0, 1]."""
    moved = warp(torch.cat([desc_m, valid_m.float()], 1), field)
    fixed = torch.cat([desc_f, valid_f.float()], 1)
    if lv.factor > 1:
        fixed, moved = F.avg_pool2d(fixed, lv.factor), F.avg_pool2d(moved, lv.factor)
    cost, support = window_costs(fixed, moved, lv)
    shift, confidence = peak_offset(cost, lv.radius)
    return shift * lv.factor, confidence * (support > 0.5).float()


def window_costs(fixed: torch.Tensor, moved: torch.Tensor, lv: MatchLevel) -> tuple[torch.Tensor, torch.Tensor]:
    """Descriptors with their validity as the last channel (B, C + 1, H, W), fixed and moving -> the window-mean
    similarity (dot product) at every offset (B, (2r+1)^2, h', w') on the lattice, offsets (dy, dx) row-major,
    and the share of each window where both streams are valid at zero offset (B, 1, h', w').

    With `lv.pool` k > 1 the products are taken on k x k cell means, the offsets still whole level pixels: the
    moving descriptors' cell means at each of the k^2 phases, shifted by whole cells (k^2 times fewer
    products; the lattice is then `lv.lattice`). The offsets of one row that share a phase are one strided view
    of it, so a pass costs a few operations per row of offsets rather than per offset (on a GPU each is a kernel
    launch). Their similarity maps are reduced to the lattice rows at once (a product with the windows' 0/1 band
    matrix), so the maps of all offsets are never held together."""
    r, k = lv.radius, lv.pool
    side = 2 * r + 1
    h, w = fixed.shape[-2:]
    hp, wp = -(-h // k), -(-w // k)
    padded = F.pad(moved, (r, r + 2 * k - 1, r, r + 2 * k - 1))
    if k > 1:
        fixed = F.avg_pool2d(F.pad(fixed, (0, wp * k - w, 0, hp * k - h)), k)
        padded = box_means(padded, k)
    phases = {(p, q): padded[:, :, p::k, q::k].contiguous() for p in range(k) for q in range(k)}
    rows, cols = (window_band(n, -(-lv.window // k), lv.step // k, fixed.dtype, fixed.device) for n in (hp, wp))
    desc, valid = fixed[:, :-1, None], fixed[:, -1:, None]
    products, overlaps = [], []
    for dy in range(side):
        ky, p = divmod(dy, k)
        row_products = fixed.new_empty(fixed.shape[0], side, rows.shape[0], wp)
        row_overlaps = torch.empty_like(row_products)
        for q in range(min(k, side)):
            count = len(range(q, side, k))
            # shifted[b, c, j, y, x] = phase[b, c, ky + y, j + x]: the offsets dx = q + k j of this row
            shifted = phases[p, q][:, :, ky : ky + hp].unfold(3, wp, 1)[:, :, :, :count].movedim(3, 2)
            row_products[:, q::k] = rows @ channel_dot(desc, shifted[:, :-1])[:, 0]
            row_overlaps[:, q::k] = rows @ channel_dot(valid, shifted[:, -1:])[:, 0]
        products.append(row_products)
        overlaps.append(row_overlaps)
    zero = phases[r % k, r % k][:, -1:, r // k : r // k + hp, r // k : r // k + wp]
    sums = torch.cat(products + overlaps + [rows @ (valid[:, :, 0] * zero)], 1) @ cols.T
    n = side * side
    costs = sums[:, :n] / sums[:, n : 2 * n].clamp_min(1e-3)
    return costs, sums[:, -1:] / (rows.sum(1)[:, None] * cols.sum(1)[None])


def box_means(x: torch.Tensor, k: int) -> torch.Tensor:
    """Means of every k x k block of (B, C, H, W), at each top-left pixel (B, C, H - k + 1, W - k + 1), as sums
    of shifted slices (several times faster on a CPU than a pooling with stride 1)."""
    rows = sum(x[:, :, i : x.shape[2] - k + 1 + i] for i in range(k))
    return sum(rows[..., j : x.shape[3] - k + 1 + j] for j in range(k)) / (k * k)


def channel_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B, C, ...) x (B, C, ...), broadcast after the channels -> their dot product over channels (B, 1, ...): on a
    CPU `accumulated_dot`, elsewhere `reduced_dot`."""
    return accumulated_dot(a, b) if a.device.type == "cpu" else reduced_dot(a, b)


def accumulated_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`channel_dot` as one fused multiply-add per channel (on a CPU a fifth faster than a product and a reduction
    over the channel axis), accumulated into a fresh contiguous tensor: a product of broadcast, overlapping views
    (`window_costs`' offsets) would take their layout and make every later step slow."""
    shape = torch.broadcast_shapes(a[:, :1].shape, b[:, :1].shape)
    out = torch.zeros(shape, dtype=torch.promote_types(a.dtype, b.dtype), device=a.device)
    for c in range(a.shape[1]):
        out.addcmul_(a[:, c : c + 1], b[:, c : c + 1])
    return out


def reduced_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """`channel_dot` as a product and a reduction: two kernel launches rather than one per channel, on a GPU,
    where the launches, not the arithmetic, set the pace. The product holds all channels at once (in
    `window_costs`, C x the offsets of a row: about 100 MB for a 1 MP pair)."""
    return (a * b).sum(1, keepdim=True).contiguous()


def window_band(size: int, window: int, step: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(lattice points, size): 1 where a pixel lies in the `window` centred on the lattice point (one every
    `step` pixels)."""
    centres = torch.arange(0, size, step, device=device)
    pixels = torch.arange(size, device=device)
    return ((pixels - centres[:, None]).abs() <= window // 2).to(dtype)


def peak_offset(cost: torch.Tensor, radius: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-pixel offset (B, 2, h, w) of the best offset, refined by a parabola through it and its neighbours
    on each axis, and its distinctness (B, 1, h, w) in [0, 1], as the window matchers judge a peak: the gap
    between the best similarity and the runner-up (the best `RUNNER_UP_GAP` px or more from it) over the gap
    between the best and the median. A lone peak scores near 1, a flat or repeating surface near 0, whatever
    the descriptors' contrast. 0 below `WindowConfig.min_distinct`, without a runner-up, and where the best
    offset is on the search border (the match lies beyond the radius)."""
    side = 2 * radius + 1
    best = cost.argmax(1)  # (B, h, w)
    row, col = best // side, best % side
    inside = ((row > 0) & (row < side - 1) & (col > 0) & (col < side - 1))[:, None]
    by, bx = row.clamp(1, side - 2), col.clamp(1, side - 2)

    def at(oy: int, ox: int) -> torch.Tensor:
        return torch.gather(cost, 1, ((by + oy) * side + bx + ox)[:, None])

    centre = at(0, 0)
    offsets = []
    for lo, hi, base in ((at(-1, 0), at(1, 0), by), (at(0, -1), at(0, 1), bx)):
        curve = (lo + hi - 2 * centre).clamp(max=-1e-6)
        offsets.append(base[:, None] - radius + (0.5 * (lo - hi) / curve).clamp(-1, 1))
    ys = torch.arange(side, device=cost.device).repeat_interleave(side).view(1, -1, 1, 1)
    xs = torch.arange(side, device=cost.device).repeat(side).view(1, -1, 1, 1)
    far = ((ys - row[:, None]).abs() >= RUNNER_UP_GAP) | ((xs - col[:, None]).abs() >= RUNNER_UP_GAP)
    top = cost.amax(1, keepdim=True)
    second = cost.masked_fill(~far, -math.inf).amax(1, keepdim=True)
    median = cost.median(1, keepdim=True).values
    distinct = ((top - second) / (top - median).clamp_min(1e-9)).clamp(0, 1)
    kept = inside & (top > median) & second.isfinite() & (distinct >= WindowConfig.min_distinct)
    return torch.cat(offsets, 1), torch.where(kept, distinct, torch.zeros_like(distinct))


def median_test(
    shift: torch.Tensor, valid: torch.Tensor, threshold: float = MEDIAN_THRESHOLD, noise: float = MEDIAN_NOISE
) -> torch.Tensor:
    """`models.classical.matching.median_test` on a lattice of shifts (B, 2, h, w) with `valid` (B, 1, h, w): the
    valid shifts that are like their 5 x 5 valid neighbours (B, 1, h, w), as floats."""
    b, _, h, w = shift.shape
    values = torch.where(valid, shift.detach(), torch.nan)
    rings = F.unfold(F.pad(values, (2, 2, 2, 2), value=math.nan), 5).view(b, 2, 25, h, w)
    rings = torch.cat([rings[:, :, :12], rings[:, :, 13:]], 2)  # without the window itself
    median = rings.nanmedian(2).values
    deviation = (rings - median[:, :, None]).abs().nanmedian(2).values
    residual = ((values - median).abs() / (deviation + noise)).amax(1, keepdim=True)
    unlike = median.isfinite().all(1, keepdim=True) & (residual > threshold)
    return (valid & ~unlike).to(shift.dtype)


def _to_pixels(lattice: torch.Tensor, step: int, shape: tuple[int, int], factor: int) -> torch.Tensor:
    """Bilinear read of a lattice map at every pixel of `shape` (lattice point i at level pixel i * step, whose
    centre is at full-resolution pixel (i * step + 0.5) * factor - 0.5)."""
    grid = (base_grid(shape, lattice) + 0.5 - 0.5 * factor) / (step * factor)
    return sample_at(lattice, grid.expand(lattice.shape[0], -1, -1, -1), padding="border")


def spread(
    shift: torch.Tensor,
    confidence: torch.Tensor,
    step: int,
    shape,
    factor: int,
    sigma: float = WindowConfig.sigma_cells,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lattice shifts (B, 2, h, w) and confidences (B, 1, h, w; 0: dropped) -> a dense residual field
    (B, 2, H, W) and its confidence (B, 1, H, W), by normalised convolution with `models.classical`'s weights
    and pull towards no residual (`dense_residual`), by a Gaussian of `sigma` lattice cells."""
    weight = torch.where(confidence > 0, confidence.clamp_min(MIN_WEIGHT), 0.0)
    support = blur_channels(weight, sigma)
    floor = PRIOR_SHARE * weight.amax((2, 3), keepdim=True)
    smooth = blur_channels(shift * weight, sigma) / (torch.maximum(support, floor) + 1e-9)
    return _to_pixels(smooth, step, shape, factor), _to_pixels(support, step, shape, factor).clamp(0, 1)


def correct(field, shift, confidence, step: int, factor: int, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """`field` (B, 2, H, W) corrected by lattice shifts (B, 2, h, w) found on the moving side warped by it, with
    their confidences (B, 1, h, w): the median test, the spread (`spread`) and the composition (Contract 1); the
    corrected field and its dense confidence (B, 1, H, W)."""
    confidence = confidence * median_test(shift, confidence > 0)
    residual, support = spread(shift, confidence, step, tuple(field.shape[-2:]), factor, sigma)
    return compose(field, residual), support


def newton_refine(desc_f, desc_m, valid_f, valid_m, matched: Matched, steps: tuple[NewtonStep, ...]) -> Matched:
    """`matched`'s field corrected by each Gauss-Newton step in turn (its windows' shifts checked by the median test
    and spread as a pass's are); the confidence stays the window passes' (Contract 2: their support)."""
    field, fields = matched.field, list(matched.levels)
    for step in steps:
        shift, confidence = newton_matches(desc_f, desc_m, valid_f, valid_m, field, step)
        field, _ = correct(field, shift, confidence, step.step // step.pool, step.pool, step.spread)
        fields.append(field)
    return Matched(field, matched.confidence, fields)


def newton_schedule(newton: int, repeat: int, shape: tuple[int, int]) -> tuple[NewtonStep, ...]:
    """The Gauss-Newton steps an image of `shape` (H, W) gets: the first `newton` of `NEWTON_STEPS`, the last of them
    `repeat` times more where the smaller side is under `REPEAT_SIDE` px."""
    steps = NEWTON_STEPS[:newton]
    if steps and min(shape) < REPEAT_SIDE:
        steps += (steps[-1],) * repeat
    return steps


def newton_matches(desc_f, desc_m, valid_f, valid_m, field, step: NewtonStep) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual shift (B, 2, h', w') of every window of `step` on its lattice after the moving descriptors are
    warped by `field`, by one damped Gauss-Newton step on the streams' difference (the gradient the mean of both
    streams': second-order accurate; pixels whose differences reach no-data left out), and its confidence
    (B, 1, h', w') in [0, 1]: the window's smallest curvature (undamped) against the image's median one. 0 where
    under half the window has both streams valid, where the window has no curvature across some direction (a
    straight edge) and where the step reaches `NEWTON_REACH` or beyond."""
    moving = torch.cat([desc_m, valid_m.float()], 1)
    if step.pool > 1:  # both streams' cell means, the moving ones warped by the field's cell means
        fixed = F.avg_pool2d(torch.cat([desc_f, valid_f.float()], 1), step.pool)
        desc_f, valid_f = fixed[:, :-1], fixed[:, -1:]
        moving, field = F.avg_pool2d(moving, step.pool), downsample_field(field, step.pool)
    moved = warp(moving, field)
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # where both central differences exist
    both = -F.max_pool2d(-((valid_f.float() * moved[:, -1:]) > 0.999).float(), 3, 1, 1)[inner]  # with its neighbours
    total, diff = desc_f + moved[:, :-1], (desc_f - moved[:, :-1])[inner]
    gy = (total[:, :, 2:, 1:-1] - total[:, :, :-2, 1:-1]) / 4  # the mean of both streams' derivatives
    gx = (total[:, :, 1:-1, 2:] - total[:, :, 1:-1, :-2]) / 4
    maps = [channel_dot(gy, gy), channel_dot(gy, gx), channel_dot(gx, gx), channel_dot(gy, diff), channel_dot(gx, diff)]
    maps += [channel_dot(diff, diff) / diff.shape[1], torch.ones_like(both)]
    h, w = desc_f.shape[-2:]
    window, spacing = -(-step.window // step.pool), step.step // step.pool
    rows, cols = (window_band(n, window, spacing, desc_f.dtype, desc_f.device)[:, 1:-1] for n in (h, w))
    sums = rows @ (torch.cat(maps, 1) * both) @ cols.T
    yy, yx, xx, by, bx, energy, count = sums.unbind(1)
    smallest = 0.5 * (yy + xx - torch.sqrt(((yy - xx) ** 2 + 4 * yx * yx).clamp_min(0))) / count.clamp_min(1)
    damping = NEWTON_DAMPING * energy / count.clamp_min(1)
    yy, xx = yy + damping, xx + damping
    det = yy * xx - yx * yx
    shift = torch.stack([xx * by - yx * bx, yy * bx - yx * by], 1) / det.clamp_min(1e-12)[:, None]
    support = count / (rows.sum(1)[:, None] * cols.sum(1)[None])
    typical = torch.where(support > 0.5, smallest, torch.nan).flatten(1).nanmedian(1).values.nan_to_num(0.0)
    confidence = smallest / (smallest + typical.view(-1, 1, 1) + 1e-12)
    shift = shift * step.pool
    kept = (support > 0.5) & (smallest > 0) & (shift.abs().amax(1) < NEWTON_REACH)
    return shift, torch.where(kept, confidence, torch.zeros_like(confidence))[:, None]


def compose(field: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """Contract 1 composition: `residual` found on the moving image warped by `field` -> one field."""
    grid = base_grid(field.shape[-2:], field)
    return residual + sample_at(field, grid + residual, padding="border")


def global_shift(desc_f: torch.Tensor, desc_m: torch.Tensor, factor: int = 8) -> tuple[float, float]:
    """The translation (dy, dx) in full-resolution pixels that best aligns the moving descriptors with the
    fixed ones: the peak of their FFT cross-correlation at 1/`factor` resolution (one image, B = 1)."""
    f = F.avg_pool2d(desc_f.float(), factor)[0]
    m = F.avg_pool2d(desc_m.float(), factor)[0]
    f, m = f - f.mean((1, 2), keepdim=True), m - m.mean((1, 2), keepdim=True)
    h, w = f.shape[-2:]
    size = (2 * h, 2 * w)
    corr = torch.fft.irfft2(torch.fft.rfft2(m, s=size) * torch.fft.rfft2(f, s=size).conj(), s=size).sum(0)
    peak = int(corr.argmax())
    dy, dx = peak // size[1], peak % size[1]
    dy, dx = (dy - size[0] if dy >= h else dy), (dx - size[1] if dx >= w else dx)
    return float(dy * factor), float(dx * factor)
