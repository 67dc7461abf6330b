"""The `dsmar` method's learned fine stage on a whole pair: trend, start choice and matching, in torch.

The network's field gives the global geometry: its robust affine consensus (or, without one, the field itself) is
the start. With `trend="best"` the learned descriptors' coarse search (`COARSE`, +-28 px) looks around it, and
around no motion and the descriptors' global translation (FFT cross-correlation) where those lie more than
`FAR_SHIFT` px from where it already looked (offsets beyond the network's reach); the coarse matches' robust trends
are then the starts. Every distinct start gets the first matching pass (starts within `SAME_START` px of an earlier
one everywhere share its pass); the one whose windows match best goes on through the narrower ones, as the
method's MIND window passes do, then through the Gauss-Newton steps (repeated on small images). With `retrend` the
first pass's matches are spread around their own affine trend rather than around the start (`retrended`).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch.nn import functional as F

from models.classical.matching import WindowGrid
from models.classical.register import WindowConfig
from models.dsmar.flow import sample_at, upsample_field
from models.dsmar.matching import (
    FineMatcher,
    Matched,
    MatchLevel,
    correct,
    global_shift,
    lattice_matches,
    median_test,
    mind_descriptors,
    newton_refine,
    newton_schedule,
)

# px: no motion and the descriptors' global translation are searched around too when this far, at the image
# centre, from every centre searched before (the coarse search reaches +-28 px around each).
FAR_SHIFT = 20.0
# Starts closer than this (px, everywhere) share one first pass.
SAME_START = 2.0
# `retrended` fits its trend only to at least this many of the first pass's matches (an affine has 6 parameters).
MIN_TREND_MATCHES = 6
# The coarse search of the learned descriptors' own trend: 1/4 resolution, +-28 px, windows of 132 px every 32 px.
COARSE = MatchLevel(4, 7, 33, 8)


@torch.no_grad()
def learned_fine(
    matcher: FineMatcher | None,
    fixed: torch.Tensor,
    moving: torch.Tensor,
    ids: tuple[int, int],
    field: torch.Tensor,
    confidence: torch.Tensor,
    trend: str,
    radii: tuple[int, ...] = (5,),
    newton: int = 0,
    repeat: int = 0,
    retrend: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Network inputs (2, H, W) per stream and the network's field (2, H, W) and confidence (H, W), all on one
    device -> the matched field (2, H, W) and its confidence (H, W) there: one matching pass per search radius in
    `radii` (the first `retrended` if `retrend`), then the first `newton` Gauss-Newton steps, the last `repeat` times
    more on a small image (`newton_schedule`). `matcher` None is the untrained stage: MIND-SSC descriptors
    (`mind_descriptors`), no heads run. Only the robust fits of the trends (a few hundred lattice points) run on the
    host."""
    from models.classical.interpolate import affine_eval_tensor
    from models.classical.register import field_trend

    device = fixed.device
    f, m = fixed[None], moving[None]
    if matcher is None:
        matcher, desc_f, desc_m = FineMatcher(), mind_descriptors(f), mind_descriptors(m)
    else:
        matcher = matcher.to(device).eval()
        desc_f, desc_m = matcher.describe(f, m, *(torch.tensor([i], device=device) for i in ids))
    shape = tuple(field.shape[1:])
    first = field
    if trend != "field":
        weight = torch.where(fixed[1] > 0, confidence, torch.nan)
        params, support = field_trend(field, weight, WindowConfig())
        if support:  # no consensus: the network's own field is the better start than no motion
            first = affine_eval_tensor(params, shape, device)
    starts = [first[None].float()]
    valid_f, valid_m = f[:, 1:2], m[:, 1:2]
    if trend == "best":
        priors = coarse_priors(starts[0], global_shift(desc_f, desc_m))
        found = [descriptor_trend(desc_f, desc_m, valid_f, valid_m, prior) for prior in priors]
        trends = [affine_eval_tensor(params, shape, device)[None] for params in found if params is not None]
        starts = distinct_starts(trends, SAME_START) or starts
    tried = [(matcher.passes(desc_f, desc_m, valid_f, valid_m, start, radii[:1]), start) for start in starts]
    best, start = max(tried, key=lambda done: float(done[0].confidence.mean()))
    if retrend:
        best = retrended(best, start.float(), replace(matcher.levels[0], radius=radii[0]), valid_f)
    done = matcher.passes(desc_f, desc_m, valid_f, valid_m, best.field, radii[1:], first=False) if radii[1:] else best
    done = newton_refine(desc_f, desc_m, valid_f, valid_m, done, newton_schedule(newton, repeat, shape))
    return done.field[0], done.confidence[0, 0]


def retrended(
    matched: Matched,
    start: torch.Tensor,
    level: MatchLevel,
    valid_f: torch.Tensor,
) -> Matched:
    """The first pass's matches (`matched.matches[0]`, a pass of `level`) spread around their own affine trend
    instead of around the `start` they were searched from.

    Where the windows' support is thin the spread pulls a pass towards no residual, so the field there is its start:
    the coarse search's trend (1/4 resolution, 132 px windows). The trend of the pass's own matches (those the
    median test keeps, weighted by their confidence, by least squares within `WindowConfig.affine_threshold` px) is
    the better fallback. The same matches, re-expressed as residuals of that trend (Contract 1: the matched point
    `c + shift + start(c + shift)`), are spread again: no window is matched twice. On 90 train pairs the median
    EPE fell on 31 and rose on 14 (benchmarks/tuning.md).
    """
    from models.classical.interpolate import affine_eval_tensor, refined_affine

    shift, confidence = matched.matches[0]
    kept = (confidence * median_test(shift, confidence > 0))[0, 0] > 0
    if int(kept.sum()) < MIN_TREND_MATCHES:
        return matched
    matched_at = centres(lattice_grid(level, tuple(confidence.shape[-2:]))).to(shift) + shift
    total = shift + sample_at(start, matched_at, padding="border")
    points, shifts = (x[0].permute(1, 2, 0)[kept].double().cpu().numpy() for x in (matched_at, total))
    weights = confidence[0, 0][kept].double().cpu().numpy()
    params, _ = refined_affine(points, shifts, weights, np.ones(len(points), bool), WindowConfig().affine_threshold)
    trend = affine_eval_tensor(params, tuple(start.shape[-2:]), start.device)[None].to(start)
    residual = total - sample_at(trend, matched_at, padding="border")
    field, support = correct(trend, residual, confidence, *level.lattice, WindowConfig.sigma_cells)
    return Matched(field, support * valid_f.float(), [field], matched.matches)


def lattice_grid(level: MatchLevel, shape: tuple[int, int]) -> WindowGrid:
    """The full-resolution window grid of `level`'s lattice of `shape` (h, w) cells."""
    step, factor = level.lattice
    origin = 0.5 * factor - 0.5  # level pixel 0's centre at full resolution
    return WindowGrid(origin, origin, step * factor, *shape)


def centres(grid: WindowGrid) -> torch.Tensor:
    """(1, 2, h, w) the (y, x) centres of `grid`'s windows."""
    return torch.from_numpy(grid.centres()).permute(2, 0, 1)[None]


def distinct_starts(starts: list[torch.Tensor], tolerance: float) -> list[torch.Tensor]:
    """`starts` without those within `tolerance` px everywhere of an earlier one: the first pass would
    find the same matches from both."""
    kept: list[torch.Tensor] = []
    for start in starts:
        if all(float((start - other).abs().amax()) > tolerance for other in kept):
            kept.append(start)
    return kept


def coarse_priors(first: torch.Tensor, shift: tuple[float, float]) -> list[torch.Tensor]:
    """Where the coarse search looks: around `first` (1, 2, H, W), then around no motion and the global translation
    `shift` (dy, dx) where each lies more than `FAR_SHIFT` px, at the image centre, from every shift looked around
    before (constant fields). On an image under two coarse windows a side the search looks around `first`'s shift
    at the centre instead: windows that wide match one shift each, so the start's rotation or scale error would pass
    into the trend."""
    h, w = first.shape[-2:]
    centre = tuple(first[0, :, h // 2, w // 2].tolist())
    wide = min(h, w) >= 2 * COARSE.window * COARSE.factor
    centres: list[tuple[float, float]] = []
    for prior in (centre, (0.0, 0.0), shift):
        if all(np.hypot(prior[0] - y, prior[1] - x) > FAR_SHIFT for y, x in centres):
            centres.append(prior)
    constant = [
        torch.tensor(c, dtype=first.dtype, device=first.device).view(1, 2, 1, 1).expand_as(first) for c in centres
    ]
    return [first, *constant[1:]] if wide else constant


def descriptor_trend(desc_f, desc_m, valid_f, valid_m, start: torch.Tensor) -> np.ndarray | None:
    """Affine params (3, 2) of the learned descriptors' coarse window matches searched around the field `start`
    (1, 2, H, W), by the classical robust fit (RANSAC affine, else translation); None without consensus."""
    from models.classical.matching import Matches
    from models.classical.register import trend

    shift, quality = lattice_matches(desc_f, desc_m, valid_f, valid_m, start, COARSE)
    grid = lattice_grid(COARSE, tuple(quality.shape[-2:]))
    total = shift + sample_at(start, centres(grid).to(shift) + shift, padding="border")  # Contract 1
    shifts = total[0].permute(1, 2, 0).double().cpu().numpy()
    quality = quality[0, 0].double().cpu().numpy()
    shifts[quality <= 0] = np.nan
    params, support = trend(Matches(grid, shifts, quality), WindowConfig())
    return params if support else None


def enlarge(
    field: torch.Tensor, confidence: torch.Tensor, shape: tuple[int, int], factor: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A field (2, h, w) and confidence (h, w) of the pair shrunk `factor` x (`models.preprocess.block_means`) at
    full resolution `shape`, on their device (vectors scaled; a last partial block repeats its neighbour)."""
    full = (factor * field.shape[1], factor * field.shape[2])
    up = upsample_field(field[None], full)
    conf = F.interpolate(confidence[None, None], size=full, mode="bilinear")
    pad = (0, shape[1] - full[1], 0, shape[0] - full[0])
    return F.pad(up, pad, mode="replicate")[0], F.pad(conf, pad, mode="replicate")[0, 0]
