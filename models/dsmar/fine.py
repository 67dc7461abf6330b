"""The `dsmar` method's learned fine stage on a whole pair: trend, start choice and matching, in torch.

The network's field gives the global geometry: its robust affine consensus (or the field itself) is the
first start. With `trend="best"` the learned descriptors' own coarse trend, around no motion and around
their global translation (FFT cross-correlation) where that points far from the first (offsets beyond the
network's reach), gives more. Every start gets the first matching pass (starts within `SAME_START` px of an
earlier one everywhere share its pass); the one whose windows match best goes on through the narrower ones, as
the method's MIND window passes do, then through the Gauss-Newton steps.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from models.dsmar.flow import upsample_field
from models.dsmar.matching import (
    NEWTON_STEPS,
    FineMatcher,
    MatchLevel,
    global_shift,
    lattice_matches,
    mind_descriptors,
    newton_refine,
)

# A global translation this far (px) from the first start's shift at the image centre is tried as a start.
FAR_SHIFT = 8.0
# Starts closer than this (px, everywhere) share one first pass.
SAME_START = 2.0
# The coarse search of the learned descriptors' own trend: 1/4 resolution, +-28 px, windows of 132 px every 32 px.
COARSE = MatchLevel(4, 7, 33, 8)


@torch.no_grad()
def learned_fine(
    matcher: FineMatcher | None,
    fixed: np.ndarray,
    moving: np.ndarray,
    ids: tuple[int, int],
    field: np.ndarray,
    confidence: np.ndarray,
    trend: str,
    device: str | torch.device,
    radii: tuple[int, ...] = (5,),
    newton: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs (2, H, W) per stream and the network's field (2, H, W) and confidence (H, W) -> the
    matched field (2, H, W) and its confidence (H, W): one matching pass per search radius in `radii`, then the
    first `newton` Gauss-Newton steps (`NEWTON_STEPS`). `matcher` None is the untrained stage: MIND-SSC
    descriptors (`mind_descriptors`), no heads run."""
    from models.classical.interpolate import affine_eval
    from models.classical.register import WindowConfig, field_trend

    f = torch.from_numpy(fixed)[None].to(device)
    m = torch.from_numpy(moving)[None].to(device)
    if matcher is None:
        matcher, desc_f, desc_m = FineMatcher(), mind_descriptors(f), mind_descriptors(m)
    else:
        matcher = matcher.to(device).eval()
        desc_f, desc_m = matcher.describe(f, m, *(torch.tensor([i], device=device) for i in ids))
    shape = field.shape[1:]
    first = field
    if trend != "field":
        params, support = field_trend(field, np.where(fixed[1] > 0, confidence, np.nan), WindowConfig())
        if support:  # no consensus: the network's own field is the better start than no motion
            first = affine_eval(params, shape)
    starts = [torch.from_numpy(np.ascontiguousarray(first, np.float32))[None].to(device)]
    valid_f, valid_m = f[:, 1:2], m[:, 1:2]
    if trend == "best":
        priors = [(0.0, 0.0)]
        shift = global_shift(desc_f, desc_m)
        if np.hypot(*shift) > FAR_SHIFT:
            priors.append(shift)
        for prior in priors:
            start = torch.tensor(prior, dtype=torch.float32, device=device).view(1, 2, 1, 1).expand_as(starts[0])
            params = descriptor_trend(desc_f, desc_m, valid_f, valid_m, start.contiguous())
            if params is not None:
                starts.append(torch.from_numpy(affine_eval(params, shape))[None].to(device))
    starts = distinct_starts(starts, SAME_START)
    tried = [matcher.passes(desc_f, desc_m, valid_f, valid_m, start, radii[:1]) for start in starts]
    best = max(tried, key=lambda done: float(done.confidence.mean()))
    done = matcher.passes(desc_f, desc_m, valid_f, valid_m, best.field, radii[1:], first=False) if radii[1:] else best
    done = newton_refine(desc_f, desc_m, valid_f, valid_m, done, NEWTON_STEPS[:newton])
    return done.field[0].cpu().numpy(), done.confidence[0, 0].cpu().numpy()


def distinct_starts(starts: list[torch.Tensor], tolerance: float) -> list[torch.Tensor]:
    """`starts` without those within `tolerance` px everywhere of an earlier one: the first pass would
    find the same matches from both."""
    kept: list[torch.Tensor] = []
    for start in starts:
        if all(float((start - other).abs().amax()) > tolerance for other in kept):
            kept.append(start)
    return kept


def descriptor_trend(desc_f, desc_m, valid_f, valid_m, start: torch.Tensor) -> np.ndarray | None:
    """Affine params (3, 2) of the learned descriptors' coarse window matches searched around `start` (a
    constant field), by the classical robust fit (RANSAC affine, else translation); None without consensus."""
    from models.classical.matching import Matches, WindowGrid
    from models.classical.register import WindowConfig, trend

    shift, quality = lattice_matches(desc_f, desc_m, valid_f, valid_m, start, COARSE)
    shifts = (shift[0] + start[0, :, :1, :1]).permute(1, 2, 0).double().cpu().numpy()
    quality = quality[0, 0].double().cpu().numpy()
    shifts[quality <= 0] = np.nan
    step, factor = COARSE.lattice
    origin = 0.5 * factor - 0.5  # level pixel 0's centre at full resolution
    grid = WindowGrid(origin, origin, step * factor, *quality.shape)
    params, support = trend(Matches(grid, shifts, quality), WindowConfig())
    return params if support else None


def halve(image: np.ndarray) -> np.ndarray:
    """(C, H, W) 2 x 2 block means per band (`models.classical.register.halve`)."""
    from models.classical.register import halve as halve_band

    return np.stack([halve_band(band) for band in image])


def double(field: np.ndarray, confidence: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A half-resolution field (2, h, w) and confidence (h, w) at full resolution `shape` (vectors doubled; an
    odd last row or column repeats its neighbour)."""
    full = (2 * field.shape[1], 2 * field.shape[2])
    up = upsample_field(torch.from_numpy(field)[None], full)[0].numpy()
    conf = F.interpolate(torch.from_numpy(confidence)[None, None], size=full, mode="bilinear")[0, 0].numpy()
    pad = ((0, shape[0] - full[0]), (0, shape[1] - full[1]))
    return np.pad(up, ((0, 0), *pad), mode="edge"), np.pad(conf, pad, mode="edge")
