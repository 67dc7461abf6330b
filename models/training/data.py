"""The training pack: aligned gray pairs in one compressed .npz, and random batches drawn from it.

A pack holds, per pair, the fixed and moving images on one grid as 8-bit gray (the mean of their
bands, as `models.preprocess.to_gray` takes it; JPEG-coded at quality 90 like most sources, so the
whole train split fits in a few MiB), at most `max_side` pixels a side, their modalities and category, and why
their ground truth is doubtful (`datagen.pairs.doubtful_ground_truth`, decided when the pack is built; such pairs
are packed but never trained on). Real pairs come
from the `train` split through `datagen.pairs.load_aligned_pair`; synthetic ones from
`datagen.synthetic.render_scene` (optical vs SAR and optical vs DEM of one scene). Packing once keeps
the trainer free of image decoding and of any dependency beyond numpy and torch, so it runs as is
on a bare GPU machine.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kernel.errors import InputError
from models.api import MODALITIES
from models.dsmar.weights import sha256_file
from models.preprocess import to_gray


@dataclass(frozen=True)
class PackedPair:
    fixed: np.ndarray  # (H, W) uint8
    moving: np.ndarray  # (H, W) uint8
    fixed_modality: str
    moving_modality: str
    category: str
    pair_id: str
    doubtful: str = ""  # why the ground truth is known not to align the pair; empty when it is trusted


# What the pack stores of each pair besides its images, in this order.
META_FIELDS = ("fixed_modality", "moving_modality", "category", "pair_id", "doubtful")


def _to_uint8_gray(image: np.ndarray) -> np.ndarray:
    gray = np.nanmean(image, axis=0) if image.ndim == 3 else image
    return np.clip(np.round(np.nan_to_num(gray, nan=0.0)), 0, 255).astype(np.uint8)


def real_pairs(pairs_dir: Path, split: str = "train") -> list[PackedPair]:
    """The aligned real pairs of one split (8-bit sources) as uint8 gray."""
    from datagen.pairs import doubtful_ground_truth, load_aligned_pair, read_pairs

    packed = []
    for record in read_pairs(pairs_dir, split):
        try:
            pair = load_aligned_pair(record)
        except InputError:
            continue
        packed.append(
            PackedPair(
                _to_uint8_gray(pair.fixed),
                _to_uint8_gray(pair.moving),
                pair.fixed_modality,
                pair.moving_modality,
                pair.category,
                pair.pair_id,
                doubtful_ground_truth(record) or "",
            )
        )
    return packed


# Why an unlabeled pair is never trained on by the supervised terms (its `doubtful`).
UNLABELED = "no ground truth: roughly aligned by its authors, for the self-supervised term only"


def unlabeled_pairs(folder: Path, max_side: int = 384) -> list[PackedPair]:
    """The roughly aligned real optical-SAR pairs of an unlabeled folder (`datagen.unlabeled_pairs`) as uint8 gray,
    in evenly spread tiles of at most `max_side` px (what the pack keeps of a pair), marked `UNLABELED`."""
    from datagen.unlabeled_pairs import load_unlabeled_pair, read_unlabeled

    packed = []
    for record in read_unlabeled(folder):
        pair = load_unlabeled_pair(record)
        fixed, moving = _to_uint8_gray(pair.fixed), _to_uint8_gray(pair.moving)
        h, w = fixed.shape
        rows = np.linspace(0, max(h - max_side, 0), -(-h // max_side)).round().astype(int)
        cols = np.linspace(0, max(w - max_side, 0), -(-w // max_side)).round().astype(int)
        for y in rows:
            for x in cols:
                window = (slice(y, y + max_side), slice(x, x + max_side))
                packed.append(
                    PackedPair(
                        fixed[window].copy(),
                        moving[window].copy(),
                        pair.fixed_modality,
                        pair.moving_modality,
                        pair.category,
                        f"{pair.pair_id}@{y},{x}",
                        UNLABELED,
                    )
                )
    return packed


def self_supervised_pairs(pairs: list[PackedPair]) -> list[PackedPair]:
    """The pack's unlabeled pairs: what the self-supervised term trains on."""
    return [p for p in pairs if p.doubtful == UNLABELED]


# The synthetic scenes belong to the pack, not to a run: a pack rebuilt from any config holds the same scenes, so the
# held-out set drawn from it, the training ledger's, is the same.
PACK_SYNTHETIC_SEED = 7


def synthetic_pairs(count: int, size: int) -> list[PackedPair]:
    """`count` scenes, each giving an optical-SAR and an optical-DEM pair, stretched to uint8."""
    from datagen.synthetic import render_scene

    rng = np.random.default_rng(PACK_SYNTHETIC_SEED)
    packed = []
    for i in range(count):
        scene = render_scene((size, size), rng)
        optical = np.round(255 * to_gray(scene.optical, "optical")).astype(np.uint8)
        for name, image in (("sar", scene.sar), ("dem", scene.dem[None])):
            moving = np.round(255 * to_gray(image, name)).astype(np.uint8)
            packed.append(PackedPair(optical, moving, "optical", name, f"synthetic-{name}", f"synth-{i:04d}-{name}"))
    return packed


def _encode(image: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=quality)
    return np.frombuffer(buffer.getvalue(), dtype=np.uint8)


def _decode(data: np.ndarray) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data.tobytes())) as img:
        return np.asarray(img.convert("L"), dtype=np.uint8).copy()


def _centre_crop(image: np.ndarray, max_side: int) -> np.ndarray:
    h, w = image.shape
    y0, x0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    return image[y0 : y0 + max_side, x0 : x0 + max_side]


def write_pack(pairs: list[PackedPair], path: Path, max_side: int = 384, quality: int = 90) -> str:
    """Write the pack; return its sha256 (the training record's data hash)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {}
    meta = []
    for i, p in enumerate(pairs):
        arrays[f"f{i:05d}"] = _encode(_centre_crop(p.fixed, max_side), quality)
        arrays[f"m{i:05d}"] = _encode(_centre_crop(p.moving, max_side), quality)
        meta.append([getattr(p, name) for name in META_FIELDS])
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)
    return sha256_file(path)


def read_pack(path: Path) -> list[PackedPair]:
    path = Path(path)
    if not path.exists():
        raise InputError(f"training pack {path} not found (build it with `dsmar train --build-pack`)")
    with np.load(path) as data:
        meta = json.loads(data["meta"].tobytes().decode())
        if any(len(row) != len(META_FIELDS) for row in meta):
            raise InputError(
                f"training pack {path} does not say which pairs have doubtful ground truth; "
                "rebuild it with `dsmar train --build-pack PAIRS`"
            )
        return [PackedPair(_decode(data[f"f{i:05d}"]), _decode(data[f"m{i:05d}"]), *row) for i, row in enumerate(meta)]


@dataclass(frozen=True)
class Batch:
    """Numpy batch: images (B, 2, T, T) uint8 [fixed, moving] of aligned sources, modality ids (B, 2)."""

    images: np.ndarray
    modalities: np.ndarray


def _at_least(image: np.ndarray, side: int) -> np.ndarray:
    """Upscale (bilinear) so that both sides are at least `side`; larger images are returned as is."""
    h, w = image.shape
    factor = side / min(h, w)
    if factor <= 1:
        return image
    from PIL import Image

    size = (max(side, int(np.ceil(w * factor))), max(side, int(np.ceil(h * factor))))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


class BatchSampler:
    """Random aligned source crops of side `size + 2 * margin`, random dihedral flips.

    The margin lets the trainer warp the moving image by up to `margin` px without sampling outside
    its source, so no no-data border follows the warp (a network with a validity input would read
    the shift off such a border instead of off the images). Pairs smaller than a source crop are
    upscaled (an aligned pair stays aligned), never padded. A flip or rotation of an aligned pair
    keeps it aligned, so geometry augmentation is free here; `modality_dropout` replaces a modality
    by the generic `other` so that embedding learns too.
    """

    def __init__(self, pairs: list[PackedPair], size: int, seed: int, modality_dropout: float = 0.15, margin: int = 0):
        if not pairs:
            raise InputError("the training pack holds no pairs")
        self.side = size + 2 * margin
        self.sources = [np.stack([_at_least(p.fixed, self.side), _at_least(p.moving, self.side)]) for p in pairs]
        self.ids = np.array([[MODALITIES.index(p.fixed_modality), MODALITIES.index(p.moving_modality)] for p in pairs])
        self.rng = np.random.default_rng(seed)
        self.modality_dropout = modality_dropout
        self.other = MODALITIES.index("other")

    def sample(self, batch_size: int) -> Batch:
        t = self.side
        images = np.zeros((batch_size, 2, t, t), np.uint8)
        mods = np.zeros((batch_size, 2), np.int64)
        for b in range(batch_size):
            i = int(self.rng.integers(len(self.sources)))
            source = self.sources[i]
            h, w = source.shape[1:]
            y0 = int(self.rng.integers(0, h - t + 1))
            x0 = int(self.rng.integers(0, w - t + 1))
            crop = np.rot90(source[:, y0 : y0 + t, x0 : x0 + t], int(self.rng.integers(4)), axes=(1, 2))
            if self.rng.random() < 0.5:
                crop = crop[:, :, ::-1]
            images[b] = crop
            mods[b] = self.ids[i]
            for j, p in enumerate((self.modality_dropout / 2, self.modality_dropout)):
                if self.rng.random() < p:
                    mods[b, j] = self.other
        return Batch(images, mods)


def trusted_pairs(pairs: list[PackedPair], prefixes: tuple[str, ...] = ()) -> list[PackedPair]:
    """The pairs to train on: those whose ground truth is not doubtful and whose id starts with none of
    `prefixes` (a run's own further exclusions)."""
    return [p for p in pairs if not p.doubtful and not any(p.pair_id.startswith(x) for x in prefixes)]


HOLDOUT_SEED = 0  # the held-out pairs belong to the pack, not to a run: every run validates on the same ones


def split_holdout(pairs: list[PackedPair], fraction: float) -> tuple[list[PackedPair], list[PackedPair]]:
    """(train, validation) by pair under the fixed `HOLDOUT_SEED`; validation is at least one pair when
    fraction > 0."""
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(pairs))
    n_val = int(round(fraction * len(pairs)))
    if fraction > 0:
        n_val = max(1, n_val)
    val = set(order[:n_val].tolist())
    return [p for i, p in enumerate(pairs) if i not in val], [p for i, p in enumerate(pairs) if i in val]


def pack_split(
    packed: list[PackedPair], fraction: float, exclude: tuple[str, ...] = ()
) -> tuple[list[PackedPair], list[PackedPair]]:
    """(train, validation) of a pack: the held-out pairs depend on the pack and `fraction` only, so neither a
    run's seed nor its exclusions can move a validation pair into training; `exclude` thins the train side."""
    train, val = split_holdout(trusted_pairs(packed), fraction)
    return trusted_pairs(train, exclude), val
