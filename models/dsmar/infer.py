"""Running a trained DS-MAR on a pair of any size: normalisation, padding, tiling with blended overlaps."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch.nn import functional as F

from kernel.taper import tile_taper
from kernel.warp import compose, warp_image
from models.api import MODALITIES
from models.dsmar import dihedral
from models.dsmar.network import DSMAR
from models.preprocess import to_gray

# Images larger than TILE px a side are registered in tiles overlapping by OVERLAP px, blended by `kernel.taper`.
TILE, OVERLAP = 1024, 128


def network_input(image: np.ndarray, modality: str) -> np.ndarray:
    """(C, H, W) float32 with NaN -> (2, H, W): gray stretched to [-1, 1] (0 where invalid), validity."""
    gray = to_gray(image, modality)
    valid = np.isfinite(gray)
    return np.stack([np.where(valid, 2.0 * gray - 1.0, 0.0), valid]).astype(np.float32)


def modality_id(name: str, known: Iterable[str] | None) -> int:
    """Embedding index; modalities the weights never saw in training use the generic `other`."""
    if known is not None and name not in set(known):
        name = "other"
    return MODALITIES.index(name)


def default_device(device: str | torch.device | None) -> str | torch.device:
    """The device asked for, else CUDA where available, else the CPU."""
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side `tile` covering `size` with at least `overlap` shared pixels."""
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


@torch.no_grad()
def _run_tile(model: DSMAR, fixed: np.ndarray, moving: np.ndarray, ids: tuple[int, int], device) -> tuple:
    """One tile (2, h, w) per stream -> field (2, h, w), confidence (h, w); pads to the network stride."""
    h, w = fixed.shape[-2:]
    s = model.config.stride
    ph, pw = (-h) % s, (-w) % s
    f = torch.from_numpy(fixed)[None].to(device)
    m = torch.from_numpy(moving)[None].to(device)
    if ph or pw:
        f = F.pad(f, (0, pw, 0, ph))
        m = F.pad(m, (0, pw, 0, ph))
    fid = torch.tensor([ids[0]], device=device)
    mid = torch.tensor([ids[1]], device=device)
    out = model(f, m, fid, mid, match=False)
    field = out.field[0, :, :h, :w].float().cpu().numpy()
    conf = out.confidence[0, 0, :h, :w].float().cpu().numpy()
    return field, conf


def predict_field(
    model: DSMAR,
    fixed: np.ndarray,
    moving: np.ndarray,
    fixed_modality: str,
    moving_modality: str,
    known_modalities: Iterable[str] | None = None,
    tile: int = TILE,
    overlap: int = OVERLAP,
    device: str | torch.device | None = None,
    iterations: int = 1,
    optimise: dict | None = None,
    augment: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Field (2, H, W) (Contract 1) and confidence (H, W) for float32 (C, H, W) images with NaN.

    `augment` (1, 2, 4 or 8) averages the fields found in that many rotated/mirrored frames of the
    pair (`models.dsmar.dihedral`), at that many times the cost. `iterations` > 1 re-registers the
    moving image warped by the field found so far and composes the fields (Contract 1 composition).
    `optimise` (keyword arguments of `models.dsmar.instance.instance_optimise`) fine-tunes the field
    on this pair, unsupervised.
    """
    args = (fixed_modality, moving_modality, known_modalities, tile, overlap, device)
    field, conf = _predict_augmented(model, fixed, moving, augment, *args)
    for _ in range(iterations - 1):
        warped = warp_image(moving, field)
        step, conf = _predict_augmented(model, fixed, warped, augment, *args)
        field = compose(field, step)
        field = np.where(np.isfinite(field), field, step)
    if optimise is not None:
        from models.dsmar.instance import instance_optimise

        field = instance_optimise(
            network_input(fixed, fixed_modality), network_input(moving, moving_modality), field, **optimise
        )
    return field, conf


def _predict_augmented(
    model: DSMAR, fixed: np.ndarray, moving: np.ndarray, augment: int, *args
) -> tuple[np.ndarray, np.ndarray]:
    """Mean field and confidence over the first `augment` grid symmetries, each mapped back to this frame."""
    field_sum, conf_sum = 0.0, 0.0
    syms = dihedral.symmetries(augment)
    for sym in syms:
        field, conf = _predict_once(model, dihedral.apply(fixed, sym), dihedral.apply(moving, sym), *args)
        field_sum = field_sum + dihedral.undo_field(field, sym)
        conf_sum = conf_sum + dihedral.undo(conf, sym)
    return (field_sum / len(syms)).astype(np.float32), (conf_sum / len(syms)).astype(np.float32)


def _predict_once(
    model: DSMAR,
    fixed: np.ndarray,
    moving: np.ndarray,
    fixed_modality: str,
    moving_modality: str,
    known_modalities: Iterable[str] | None = None,
    tile: int = TILE,
    overlap: int = OVERLAP,
    device: str | torch.device | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    device = default_device(device)
    model = model.to(device)
    known = list(known_modalities) if known_modalities is not None else None
    ids = (modality_id(fixed_modality, known), modality_id(moving_modality, known))
    f_in = network_input(fixed, fixed_modality)
    m_in = network_input(moving, moving_modality)
    h, w = f_in.shape[-2:]
    overlap = min(overlap, tile // 2)
    field = np.zeros((2, h, w), np.float32)
    conf = np.zeros((h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    ys, xs = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    for y0 in ys:
        for x0 in xs:
            sl = (slice(y0, y0 + tile), slice(x0, x0 + tile))
            t_field, t_conf = _run_tile(model, f_in[(slice(None), *sl)], m_in[(slice(None), *sl)], ids, device)
            th, tw = t_conf.shape
            top, bottom, left, right = (
                0 if edge else overlap for edge in (y0 == 0, y0 + th >= h, x0 == 0, x0 + tw >= w)
            )
            wgt = tile_taper((th, tw), (top, bottom, left, right), "linear", np.float32)
            field[(slice(None), *sl)] += t_field * wgt
            conf[sl] += t_conf * wgt
            weight[sl] += wgt
    return field / weight, conf / weight
