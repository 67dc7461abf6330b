"""The `dsmar` method's learned fine stage on a whole pair: trend, start choice and matching, in torch.

The network's field gives the global geometry: its robust affine consensus (or, without one, the field itself) is
the start. With `trend="best"` the learned descriptors' coarse search (`COARSE`, +-28 px) looks around it, and
around no motion and the descriptors' global translation (FFT cross-correlation) where those lie more than
`FAR_SHIFT` px from where it already looked (offsets beyond the network's reach); the coarse matches' robust trends
are then the starts. Every distinct start gets the first matching pass (starts within `SAME_START` px of an earlier
one everywhere share its pass); the one whose windows match best goes on through the narrower ones, as the
method's MIND window passes do, then through the Gauss-Newton steps (repeated on small images).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from models.dsmar.flow import sample_at, upsample_field
from models.dsmar.matching import (
    FineMatcher,
    MatchLevel,
    global_shift,
    lattice_matches,
    mind_descriptors,
    newton_refine,
    newton_schedule,
)

# px: no motion and the descriptors' global translation are searched around too when this far, at the image
# centre, from every centre searched before (the coarse search reaches +-28 px around each).
FAR_SHIFT = 20.0
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
    repeat: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Network inputs (2, H, W) per stream and the network's field (2, H, W) and confidence (H, W) -> the
    matched field (2, H, W) and its confidence (H, W): one matching pass per search radius in `radii`, then the
    first `newton` Gauss-Newton steps, the last `repeat` times more on a small image (`newton_schedule`). `matcher`
    None is the untrained stage: MIND-SSC descriptors (`mind_descriptors`), no heads run."""
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
        priors = coarse_priors(starts[0], global_shift(desc_f, desc_m))
        found = [descriptor_trend(desc_f, desc_m, valid_f, valid_m, prior) for prior in priors]
        trends = [
            torch.from_numpy(affine_eval(params, shape))[None].to(device) for params in found if params is not None
        ]
        starts = distinct_starts(trends, SAME_START) or starts
    tried = [matcher.passes(desc_f, desc_m, valid_f, valid_m, start, radii[:1]) for start in starts]
    best = max(tried, key=lambda done: float(done.confidence.mean()))
    done = matcher.passes(desc_f, desc_m, valid_f, valid_m, best.field, radii[1:], first=False) if radii[1:] else best
    done = newton_refine(desc_f, desc_m, valid_f, valid_m, done, newton_schedule(newton, repeat, shape))
    return done.field[0].cpu().numpy(), done.confidence[0, 0].cpu().numpy()


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
    from models.classical.matching import Matches, WindowGrid
    from models.classical.register import WindowConfig, trend

    shift, quality = lattice_matches(desc_f, desc_m, valid_f, valid_m, start, COARSE)
    step, factor = COARSE.lattice
    origin = 0.5 * factor - 0.5  # level pixel 0's centre at full resolution
    grid = WindowGrid(origin, origin, step * factor, *quality.shape[-2:])
    centres = torch.from_numpy(grid.centres()).permute(2, 0, 1)[None].to(shift)
    total = shift + sample_at(start, centres + shift, padding="border")  # Contract 1: the residual, then the start
    shifts = total[0].permute(1, 2, 0).double().cpu().numpy()
    quality = quality[0, 0].double().cpu().numpy()
    shifts[quality <= 0] = np.nan
    params, support = trend(Matches(grid, shifts, quality), WindowConfig())
    return params if support else None


def enlarge(
    field: np.ndarray, confidence: np.ndarray, shape: tuple[int, int], factor: int
) -> tuple[np.ndarray, np.ndarray]:
    """A field (2, h, w) and confidence (h, w) of the pair shrunk `factor` x (`models.classical.register.block_means`)
    at full resolution `shape` (vectors scaled; a last partial block repeats its neighbour)."""
    full = (factor * field.shape[1], factor * field.shape[2])
    up = upsample_field(torch.from_numpy(field)[None], full)[0].numpy()
    conf = F.interpolate(torch.from_numpy(confidence)[None, None], size=full, mode="bilinear")[0, 0].numpy()
    pad = ((0, shape[0] - full[0]), (0, shape[1] - full[1]))
    return np.pad(up, ((0, 0), *pad), mode="edge"), np.pad(conf, pad, mode="edge")
