"""Template matching of descriptor stacks on a grid of windows, by FFT, with sub-pixel peaks.

For each window of the fixed descriptors the masked, normalised sum of squared differences (SSD) against
every integer offset of a search region in the moving descriptors is computed with four FFT
correlations; the best offset is refined by a parabola and judged by the gap between the best SSD and
the best SSD away from it, relative to the surface's median: a distinct minimum is trustworthy, a flat
one (texture-less window, ambiguous pattern) is not.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np
from scipy import fft as sfft
from scipy import ndimage


@dataclass(frozen=True)
class WindowGrid:
    """Window centres on a regular lattice: rows `y0 + step * i`, columns `x0 + step * j`."""

    y0: float
    x0: float
    step: int
    ny: int
    nx: int

    def centres(self) -> np.ndarray:
        yy, xx = np.meshgrid(
            self.y0 + self.step * np.arange(self.ny), self.x0 + self.step * np.arange(self.nx), indexing="ij"
        )
        return np.stack([yy, xx], axis=-1).astype(np.float64)


@dataclass(frozen=True)
class Matches:
    """Per-window shift (ny, nx, 2) as (dy, dx) in pixels, NaN where rejected, and quality (ny, nx) in [0, 1]."""

    grid: WindowGrid
    shifts: np.ndarray
    quality: np.ndarray


def window_grid(shape: tuple[int, int], window: int, step: int) -> WindowGrid:
    """The lattice of windows that fit in `shape`, centred so the margins are equal."""
    h, w = shape
    window = min(window, h, w)
    ny = max(1, (h - window) // step + 1)
    nx = max(1, (w - window) // step + 1)
    y0 = (h - (window + step * (ny - 1))) / 2.0 + window / 2.0 - 0.5
    x0 = (w - (window + step * (nx - 1))) / 2.0 + window / 2.0 - 0.5
    return WindowGrid(y0, x0, step, ny, nx)


def match_windows(
    fixed: np.ndarray,
    moving: np.ndarray,
    fixed_valid: np.ndarray,
    moving_valid: np.ndarray,
    window: int,
    step: int,
    radius: int,
    prior: tuple[int, int] = (0, 0),
    min_valid: float = 0.7,
    min_distinct: float = 0.05,
    batch: int = 48,
) -> Matches:
    """Match every fixed window against moving offsets prior + [-radius, radius]^2 (Contract 1 sign:
    a shift is moving location minus fixed location)."""
    h, w = fixed.shape[-2:]
    window = min(window, h, w)
    grid = window_grid((h, w), window, step)
    centres = grid.centres().reshape(-1, 2)
    tops = np.rint(centres - (window / 2.0 - 0.5)).astype(int)
    size = window + 2 * radius
    pad = radius + max(abs(prior[0]), abs(prior[1])) + 1
    fm = np.pad(np.where(moving_valid, moving, 0.0), ((0, 0), (pad, pad), (pad, pad)))
    mm = np.pad(moving_valid.astype(np.float32), pad)
    ff = np.where(fixed_valid, fixed, 0.0).astype(np.float32)
    fm = fm.astype(np.float32)
    mf = fixed_valid.astype(np.float32)
    energy_f = (ff**2).sum(axis=0)
    energy_m = (fm**2).sum(axis=0)
    length = sfft.next_fast_len(size, real=True)
    shifts = np.full((len(centres), 2), np.nan)
    quality = np.zeros(len(centres))
    for start in range(0, len(centres), batch):
        sl = slice(start, start + batch)
        origins = tops[sl] + np.array(prior) - radius + pad
        patches = _extract(ff, mf, energy_f, tops[sl], window, length)
        search = _extract(fm, mm, energy_m, origins, size, length)
        ssd, support = _masked_ssd(patches, search, size - window + 1)
        ssd[support < min_valid * window * window] = np.inf
        shifts[sl], quality[sl] = _peaks(ssd, radius, prior, min_distinct)
    return Matches(grid, shifts.reshape(grid.ny, grid.nx, 2), quality.reshape(grid.ny, grid.nx))


def _extract(features, mask, energy, origins, size, length):
    """Square patches of `size` at `origins`, zero-padded to `length` for the FFT: (features, mask, energy)."""
    n, c = len(origins), features.shape[0]
    feats = np.zeros((n, c, length, length), np.float32)
    masks = np.zeros((n, length, length), np.float32)
    energies = np.zeros((n, length, length), np.float32)
    for k, (y, x) in enumerate(origins):
        feats[k, :, :size, :size] = features[:, y : y + size, x : x + size]
        masks[k, :size, :size] = mask[y : y + size, x : x + size]
        energies[k, :size, :size] = energy[y : y + size, x : x + size]
    return feats, masks, energies


def _masked_ssd(patches, search, n_off):
    """Normalised SSD sum M_t M_s |T - S|^2 / sum M_t M_s at every offset, and the support sum M_t M_s.

    Features arrive zeroed where invalid; zero-padding to the FFT length leaves the needed offsets free
    of wrap-around.
    """
    t, tm, te = patches
    s, sm, se = search
    spec = partial(sfft.rfft2, axes=(-2, -1))

    def corr(a_hat, b_hat):
        return sfft.irfft2(np.conj(a_hat) * b_hat, s=t.shape[-2:], axes=(-2, -1))[..., :n_off, :n_off]

    tm_hat, sm_hat = spec(tm), spec(sm)
    cross = sfft.irfft2((np.conj(spec(t)) * spec(s)).sum(axis=1), s=t.shape[-2:], axes=(-2, -1))[..., :n_off, :n_off]
    t_energy = corr(spec(te), sm_hat)
    s_energy = corr(tm_hat, spec(se))
    support = corr(tm_hat, sm_hat)
    ssd = (t_energy - 2.0 * cross + s_energy) / np.maximum(support, 1.0)
    return np.maximum(ssd, 0.0), support


# The runner-up of a surface's best offset is its best at least this many px (on either axis) away from it.
RUNNER_UP_GAP = 3


def _peaks(ssd, radius, prior, min_distinct):
    """Sub-pixel minimum of each SSD surface, rejected on the border or when not distinct."""
    n, k, _ = ssd.shape
    flat = ssd.reshape(n, -1)
    best = np.argmin(flat, axis=1)
    iy, ix = np.divmod(best, k)
    rows = np.arange(n)
    best_val = flat[rows, best]
    yy, xx = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    far = (np.abs(yy[None] - iy[:, None, None]) >= RUNNER_UP_GAP) | (
        np.abs(xx[None] - ix[:, None, None]) >= RUNNER_UP_GAP
    )
    second = np.where(far, ssd, np.inf).reshape(n, -1).min(axis=1)
    finite = np.isfinite(flat)
    median = np.array([np.median(row[ok]) if ok.any() else np.inf for row, ok in zip(flat, finite)])
    with np.errstate(invalid="ignore", divide="ignore"):
        distinct = np.where(np.isfinite(second) & (median > best_val), (second - best_val) / (median - best_val), 0.0)
    inside = (iy > 0) & (iy < k - 1) & (ix > 0) & (ix < k - 1) & np.isfinite(best_val)
    ok = inside & (distinct >= min_distinct)
    iyc, ixc = np.clip(iy, 1, k - 2), np.clip(ix, 1, k - 2)
    sub_y = _parabola(ssd[rows, iyc - 1, ixc], ssd[rows, iyc, ixc], ssd[rows, iyc + 1, ixc])
    sub_x = _parabola(ssd[rows, iyc, ixc - 1], ssd[rows, iyc, ixc], ssd[rows, iyc, ixc + 1])
    shifts = np.stack([iy + sub_y - radius + prior[0], ix + sub_x - radius + prior[1]], axis=1)
    shifts[~ok] = np.nan
    quality = np.where(ok, np.clip(distinct, 0.0, 1.0), 0.0)
    return shifts, quality


def _parabola(left, centre, right):
    with np.errstate(invalid="ignore", divide="ignore"):
        denom = left - 2.0 * centre + right
        offset = np.where(np.isfinite(denom) & (denom > 1e-12), 0.5 * (left - right) / denom, 0.0)
    return np.clip(offset, -0.5, 0.5)


# The normalised median test's threshold and noise level (px) (Westerweel & Scarano 2005).
MEDIAN_THRESHOLD, MEDIAN_NOISE = 2.0, 0.5


def median_test(matches: Matches, threshold: float = MEDIAN_THRESHOLD, noise: float = MEDIAN_NOISE) -> Matches:
    """Normalised median test (Westerweel & Scarano 2005): drop shifts unlike their 5 x 5 neighbours."""
    shifts = matches.shifts.copy()
    valid = np.isfinite(shifts[..., 0])
    ny, nx = valid.shape
    padded = np.pad(shifts, ((2, 2), (2, 2), (0, 0)), constant_values=np.nan)
    stack = np.stack([padded[dy : dy + ny, dx : dx + nx] for dy in range(5) for dx in range(5) if (dy, dx) != (2, 2)])
    with np.errstate(invalid="ignore"), _quiet_nanmedian():
        median = np.nanmedian(stack, axis=0)
        spread = np.nanmedian(np.abs(stack - median[None]), axis=0)
        residual = np.abs(shifts - median) / (spread + noise)
        bad = valid & np.isfinite(median[..., 0]) & (np.nanmax(residual, axis=-1) > threshold)
    shifts[bad] = np.nan
    quality = np.where(bad, 0.0, matches.quality)
    return Matches(matches.grid, shifts, quality)


class _quiet_nanmedian:
    def __enter__(self):
        import warnings

        self._catch = warnings.catch_warnings()
        self._catch.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._catch.__exit__(*exc)


def phase_correlation(
    fixed: np.ndarray, moving: np.ndarray, max_shift: float | None = None, whitening: float = 1.0
) -> tuple[np.ndarray, float]:
    """Global translation (dy, dx) with moving(p + shift) ~ fixed(p), by phase correlation of (C, H, W)
    channel stacks (cross-power spectra summed over channels, divided by their magnitude to the power
    `whitening`: 1 is classical phase correlation), with a Hann window and a parabolic sub-pixel
    peak as AROSICS does; returns it with the peak's share of the correlation energy, in [0, 1]."""
    h, w = fixed.shape[-2:]
    taper = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    a = sfft.rfft2((fixed - fixed.mean(axis=(-2, -1), keepdims=True)) * taper, axes=(-2, -1))
    b = sfft.rfft2((moving - moving.mean(axis=(-2, -1), keepdims=True)) * taper, axes=(-2, -1))
    cross = (np.conj(a) * b).reshape(-1, *a.shape[-2:]).sum(axis=0)
    cross /= np.maximum(np.abs(cross), 1e-12) ** whitening
    cross /= max(float(np.sqrt((np.abs(cross) ** 2).sum() * 2)), 1e-12)
    surface = np.fft.fftshift(sfft.irfft2(cross, s=(h, w)))
    cy, cx = h // 2, w // 2
    if max_shift is not None:
        yy, xx = np.ogrid[:h, :w]
        surface = np.where((np.abs(yy - cy) <= max_shift) & (np.abs(xx - cx) <= max_shift), surface, -np.inf)
    iy, ix = np.unravel_index(int(np.argmax(surface)), surface.shape)
    neg = -surface
    sub_y = _parabola(neg[iy - 1, ix], neg[iy, ix], neg[(iy + 1) % h, ix]) if 0 < iy else 0.0
    sub_x = _parabola(neg[iy, ix - 1], neg[iy, ix], neg[iy, (ix + 1) % w]) if 0 < ix else 0.0
    shift = np.array([iy + float(sub_y) - cy, ix + float(sub_x) - cx])
    finite = np.where(np.isfinite(surface), surface, 0.0)
    peak = float(ndimage.uniform_filter(finite, 3)[iy, ix]) * 9.0
    energy = float(np.sqrt((finite**2).sum())) * 3.0
    strength = float(np.clip(peak / energy, 0.0, 1.0)) if energy > 0 else 0.0
    return shift, strength
