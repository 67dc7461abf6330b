"""Running a trained DS-MAR on a pair of any size: normalisation, padding, tiling with blended overlaps."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
from torch.nn import functional as F

from kernel.taper import edge_taper
from kernel.warp import compose, warp_image
from models.api import MODALITIES
from models.dsmar import dihedral
from models.dsmar.network import DSMAR
from models.preprocess import gray

# Images larger than TILE px a side are registered in tiles overlapping by OVERLAP px, blended by `kernel.taper`.
TILE, OVERLAP = 1024, 128


def network_input(image: torch.Tensor, modality: str) -> torch.Tensor:
    """(C, H, W) float32 with NaN -> (2, H, W) float32 on the image's device: gray stretched to [-1, 1] (0 where
    invalid), validity."""
    stretched = gray(image, modality)
    valid = torch.isfinite(stretched)
    return torch.stack([torch.where(valid, 2.0 * stretched - 1.0, 0.0), valid.float()])


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
def _run_tile(model: DSMAR, fixed: torch.Tensor, moving: torch.Tensor, ids: tuple[int, int]) -> tuple:
    """One tile (2, h, w) per stream -> field (2, h, w), confidence (h, w) on its device; pads to the network
    stride."""
    h, w = fixed.shape[-2:]
    s = model.config.stride
    ph, pw = (-h) % s, (-w) % s
    f, m = F.pad(fixed[None], (0, pw, 0, ph)), F.pad(moving[None], (0, pw, 0, ph))
    fid = torch.tensor([ids[0]], device=fixed.device)
    mid = torch.tensor([ids[1]], device=fixed.device)
    out = model(f, m, fid, mid, match=False)
    return out.field[0, :, :h, :w].float(), out.confidence[0, 0, :h, :w].float()


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

        inputs = (
            network_input(torch.from_numpy(np.ascontiguousarray(image)), modality).numpy()
            for image, modality in ((fixed, fixed_modality), (moving, moving_modality))
        )
        field = instance_optimise(*inputs, field, **optimise)
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
    known = list(known_modalities) if known_modalities is not None else None
    ids = (modality_id(fixed_modality, known), modality_id(moving_modality, known))
    f_in, m_in = (
        network_input(torch.from_numpy(np.ascontiguousarray(image)).to(device), modality)
        for image, modality in ((fixed, fixed_modality), (moving, moving_modality))
    )
    field, conf = predict_tiles(model.to(device), f_in, m_in, ids, tile, overlap)
    return field.cpu().numpy(), conf.cpu().numpy()


def predict_tiles(
    model: DSMAR, fixed: torch.Tensor, moving: torch.Tensor, ids: tuple[int, int], tile: int, overlap: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's field (2, H, W) and confidence (H, W) for network inputs (2, H, W) (`network_input`), all on
    their device: tiles of `tile` px overlapping by `overlap`, blended by linear tapers (`kernel.taper`)."""
    h, w = fixed.shape[-2:]
    overlap = min(overlap, tile // 2)
    field = fixed.new_zeros((2, h, w))
    conf = fixed.new_zeros((h, w))
    weight = fixed.new_zeros((h, w))
    for y0 in tile_starts(h, tile, overlap):
        for x0 in tile_starts(w, tile, overlap):
            sl = (slice(y0, y0 + tile), slice(x0, x0 + tile))
            t_field, t_conf = _run_tile(model, fixed[(slice(None), *sl)], moving[(slice(None), *sl)], ids)
            th, tw = t_conf.shape
            top, bottom, left, right = (
                0 if edge else overlap for edge in (y0 == 0, y0 + th >= h, x0 == 0, x0 + tw >= w)
            )
            rows, cols = (
                torch.from_numpy(edge_taper(n, *fades, "linear").astype(np.float32)).to(fixed.device)
                for n, fades in ((th, (top, bottom)), (tw, (left, right)))
            )
            wgt = torch.outer(rows, cols)  # `kernel.taper.tile_taper`, built where the tiles are
            field[(slice(None), *sl)] += t_field * wgt
            conf[sl] += t_conf * wgt
            weight[sl] += wgt
    return field / weight, conf / weight
