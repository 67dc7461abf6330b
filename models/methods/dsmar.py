"""`dsmar`: the DS-MAR network with the shipped weights (models/weights/dsmar.pt, sha256-checked).

`weights=` (or the environment variable DSMAR_WEIGHTS, which reaches benchmark worker processes)
points the method at another weights file, such as an ablation's; it is checked the same way.
`iterations=` re-registers the warped moving image and composes; `augment=` averages over that many
rotated/mirrored frames (1, 2, 4, 8); `polish=` (px, or a list of px for several passes; 0 = off) corrects
the field by passes of window matching searched that far around it, and `trend="affine"` first reduces the
network's field to its robust affine consensus, so the network gives the global geometry and the windows
the local detail; `trend="best"` adds a coarse window search: with the classical `fine="mind"` its trend is a
second start, and whichever the first pass supports more goes on; with the torch stage the learned descriptors'
search looks around the network's start (and around no motion and their global translation where those lie
beyond its reach) and its trend is the start (`models.dsmar.fine`). `polish=0` is the network alone, dense, and
`trend="field"` passes over the network's dense field. `fine=` picks the window matcher: `"learned"` is DS-MAR's
own fine matching stage (`models.dsmar.matching`, in torch on the network's device) with the weights' trained
descriptor heads, `"init"` the same stage with untrained heads (MIND-SSC descriptors); `"mind"` the classical
MIND-SSC window stage on the CPU with the classical coarse search. `newton=` (0-2) Gauss-Newton steps on the
learned descriptors follow the passes of the torch stage (`models.dsmar.matching.NEWTON_STEPS`; without that
stage, `fine="mind"` or `polish=0`, there is nothing to follow); `repeat=` runs the last of them that many times
more on images under `models.dsmar.matching.REPEAT_SIDE` px a side; `retrend=1` spreads the first pass's matches
around their own affine trend rather than the start's (`models.dsmar.fine.retrended`). `scale=2` (or 4) runs the network on the pair
shrunk by block means (a quarter, or a sixteenth, of its cost) and scales its field back up. Each defaults to
the value recorded under "inference" in the weights' sidecar (tuned on the train split: benchmarks/tuning.md),
else 1 frame, 1 iteration, no polish. The confidence (Contract 2) is the last window pass's support where windows shaped the
field, else the network's own (its refinement module's). The method's identity (`resolve`) is the checksum of
the weights file it loads and those settings merged with the options given.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from models.registry import integer, integers, keywords, one_of, path, register_method, text

TRENDS = ("affine", "best", "field")
FINE = ("mind", "learned", "init")
OPTIONS = {
    "weights": path,
    "tile": integer(64),
    "overlap": integer(0),
    "device": text,
    "iterations": integer(1),
    "optimise": keywords,
    "augment": integer(1, choices=(1, 2, 4, 8)),
    "polish": integers(0),
    "trend": one_of(*TRENDS),
    "fine": one_of(*FINE),
    "scale": integer(1, choices=(1, 2, 4)),
    "newton": integer(0, choices=(0, 1, 2)),
    "repeat": integer(0, choices=tuple(range(9))),
    "retrend": integer(0, choices=(0, 1)),
}


@lru_cache(maxsize=4)
def _load(path: str):
    from models.dsmar.weights import load_weights

    return load_weights(Path(path))


def _weights(weights: str | Path | None = None):
    """(model, sidecar metadata) of the weights `dsmar` uses (`weights_path`); loaded once per process."""
    from models.dsmar.weights import weights_path

    return _load(str(weights_path(weights)))


@lru_cache(maxsize=8)
def _metadata(path: str, mtime_ns: int, size: int) -> dict:
    from models.dsmar.weights import checked_metadata

    return checked_metadata(Path(path))


def resolve(options: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """The checksum of the weights file `dsmar` will load with these options, and its effective settings:
    the weights' tuned "inference" settings (without the prose on how they were tuned) merged with the
    options (the weights path is identified by the checksum, not named)."""
    from models.dsmar.weights import weights_path

    path = weights_path(options.get("weights"))
    stat = path.stat() if path.exists() else None  # a changed file is checked again
    meta = _metadata(str(path), *((stat.st_mtime_ns, stat.st_size) if stat else (0, 0)))
    return meta["sha256"], settings(meta, {k: v for k, v in options.items() if k != "weights"})


# What runs where neither the options nor the weights' tuned "inference" settings say otherwise.
FALLBACK = {
    "iterations": 1,
    "augment": 1,
    "polish": 0,
    "trend": "field",
    "fine": "mind",
    "scale": 1,
    "newton": 0,
    "repeat": 0,
    "retrend": 0,
}


def settings(meta: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The settings a run uses: the fallbacks, overridden by the weights' tuned settings (without the prose on
    how they were tuned), overridden by the options given; the one merge, for the identity and for the run."""
    tuned = {k: v for k, v in meta.get("inference", {}).items() if k != "tuned"}
    return {**FALLBACK, **tuned, **options}


@register_method("dsmar", options=OPTIONS, resolve=resolve)
def make_dsmar():
    import torch

    from models.dsmar.fine import enlarge, learned_fine
    from models.dsmar.infer import (
        OVERLAP,
        TILE,
        default_device,
        modality_id,
        network_input,
        predict_field,
        predict_tiles,
    )
    from models.preprocess import block_means

    def dsmar(
        fixed: np.ndarray,
        moving: np.ndarray,
        *,
        fixed_modality: str,
        moving_modality: str,
        weights: str | Path | None = None,
        tile: int = TILE,
        overlap: int = OVERLAP,
        device: str | None = None,
        iterations: int | None = None,
        optimise: dict | None = None,
        augment: int | None = None,
        polish: int | list[int] | None = None,
        trend: str | None = None,
        fine: str | None = None,
        scale: int | None = None,
        newton: int | None = None,
        repeat: int | None = None,
        retrend: int | None = None,
        **_,
    ) -> tuple[np.ndarray, np.ndarray]:
        model, meta = _weights(weights)
        given = {
            "iterations": iterations,
            "augment": augment,
            "optimise": optimise,
            "polish": polish,
            "trend": trend,
            "fine": fine,
            "scale": scale,
            "newton": newton,
            "repeat": repeat,
            "retrend": retrend,
        }
        chosen = settings(meta, {k: v for k, v in given.items() if v is not None})  # benchmarks/tuning.md
        iterations, augment, scale = int(chosen["iterations"]), int(chosen["augment"]), int(chosen["scale"])
        optimise, polish, trend, fine = chosen.get("optimise"), chosen["polish"], chosen["trend"], chosen["fine"]
        radii = _radii(polish)
        known = meta.get("record", {}).get("modalities")
        ids = (modality_id(fixed_modality, known), modality_id(moving_modality, known))
        device = default_device(device)
        # The pair goes to the device once; from there to the returned field nothing runs on the host but the
        # robust fits of the trends, on a few hundred lattice points.
        raw = (
            torch.from_numpy(np.ascontiguousarray(fixed)).to(device),
            torch.from_numpy(np.ascontiguousarray(moving)).to(device),
        )
        pair = tuple(block_means(image, scale) for image in raw) if scale > 1 else raw

        def inputs_of(images: tuple) -> tuple:
            return network_input(images[0], fixed_modality), network_input(images[1], moving_modality)

        at_scale = None
        if augment == 1 and iterations == 1 and optimise is None:
            at_scale = inputs_of(pair)
            field, confidence = predict_tiles(model.to(device), *at_scale, ids, tile, overlap)
        else:  # frames, iterations and instance optimisation work on the host (`predict_field`)
            host = (pair[0].cpu().numpy(), pair[1].cpu().numpy())
            found = predict_field(
                model,
                *host,
                fixed_modality,
                moving_modality,
                known_modalities=known,
                tile=tile,
                overlap=overlap,
                device=device,
                iterations=iterations,
                optimise=optimise,
                augment=augment,
            )
            field, confidence = (torch.from_numpy(x).to(device) for x in found)
        if scale > 1:
            field, confidence = enlarge(field, confidence, fixed.shape[1:], scale)
        if radii and fine != "mind":
            # None: the untrained stage, whose heads' output is zero (`mind_descriptors`), without running them.
            matcher = model.matcher if fine == "learned" else None
            inputs = at_scale if scale == 1 and at_scale is not None else inputs_of(raw)
            steps = (int(chosen["newton"]), int(chosen["repeat"]))
            retrended = bool(chosen["retrend"])
            field, confidence = learned_fine(matcher, *inputs, ids, field, confidence, trend, radii, *steps, retrended)
            return field.cpu().numpy(), confidence.cpu().numpy()
        field, confidence = field.cpu().numpy(), confidence.cpu().numpy()
        if radii:
            # The field is now the windows' work around a trend: their support says where it holds. The
            # network's confidence is calibrated on its own dense field (about 2 px), which is not returned.
            field, confidence = _polish(fixed, moving, field, confidence, fixed_modality, moving_modality, radii, trend)
        return field, confidence

    return dsmar


def _radii(polish: int | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    """`polish` (checked by its option normaliser) as the search radii of its passes: 5 -> (5,), [5, 3] -> (5, 3),
    0 -> ()."""
    radii = polish if isinstance(polish, list | tuple) else [polish]
    return tuple(int(r) for r in radii if r)


def _polish(
    fixed, moving, field, confidence, fixed_modality: str, moving_modality: str, radii: tuple[int, ...], trend: str
) -> tuple[np.ndarray, np.ndarray]:
    """The network's field (or its affine consensus, or the classical trend) corrected by passes of
    MIND-SSC window matching, each searched at most its radius around the field so far; with the last
    pass's window support (H, W)."""
    import torch

    from models.classical.interpolate import affine_eval
    from models.classical.register import WindowConfig, coarse_trend, field_trend, polish
    from models.methods.mind import describe as mind_describe
    from models.preprocess import to_gray

    fixed_gray, moving_gray = to_gray(fixed, fixed_modality), to_gray(moving, moving_modality)
    fixed_valid, config, shape = np.isfinite(fixed_gray), WindowConfig(), field.shape[1:]
    # Every pass describes the same fixed image (about a third of a pass's time): once is enough.
    fixed_desc = mind_describe(fixed_gray)
    describe = lambda image: fixed_desc if image is fixed_gray else mind_describe(image)  # noqa: E731
    starts = [field]
    if trend != "field":
        weight = np.where(fixed_valid, confidence, np.nan)
        params, support = field_trend(torch.from_numpy(field), torch.from_numpy(weight), config)
        if support:  # no consensus: the network's own field is the better start than no motion
            starts = [affine_eval(params, shape)]
        if trend == "best":
            classical = affine_eval(coarse_trend(fixed_gray, moving_gray, describe, config), shape)
            if not np.allclose(classical, starts[0], atol=0.05):
                starts.append(classical)
    # Every start gets the first pass; the one whose windows match best goes on (the network's on a tie).
    passes = [polish(fixed_gray, moving_gray, start, describe, WindowConfig(fine_radius=radii[0])) for start in starts]
    field, support = max(passes, key=lambda done: float(done[1][fixed_valid].mean()))
    for radius in radii[1:]:
        field, support = polish(fixed_gray, moving_gray, field, describe, WindowConfig(fine_radius=radius))
    return field, support


def weights_metadata(weights: str | Path | None = None) -> dict:
    """The sidecar metadata (checksum, record, measured speeds) of the weights `dsmar` uses."""
    return _weights(weights)[1]
