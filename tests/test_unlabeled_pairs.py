"""The unlabeled optical-SAR pairs (../shared/data/unlabeled_sar): brought onto the optical grid through their
prealign affine, packed as pairs without ground truth, and read by the trainer's self-supervised term only."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from scipy import ndimage

from datagen.pairs import read_image
from datagen.unlabeled_pairs import load_unlabeled_pair, read_prealign, read_unlabeled
from kernel.errors import InputError
from models.training.config import TrainConfig
from models.training.data import (
    UNLABELED,
    PackedPair,
    read_pack,
    self_supervised_pairs,
    trusted_pairs,
    unlabeled_pairs,
    write_pack,
)
from models.training.trainer import Trainer


def _points(path):
    """(n, 4) LeftX, LeftY, RightX, RightY of a landmarks file (after its free-text header)."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ID,"))
    rows = list(csv.DictReader(lines[start:]))
    return np.array([[float(r[k]) for k in ("LeftX", "LeftY", "RightX", "RightY")] for r in rows])


def test_every_unlabeled_pair_comes_onto_the_optical_grid(unlabeled_dir):
    records = read_unlabeled(unlabeled_dir)
    assert len(records) == 22
    for record in records:
        pair = load_unlabeled_pair(record)
        assert pair.fixed.shape[-2:] == pair.moving.shape[-2:] and min(pair.fixed.shape[-2:]) >= 64
        assert np.isfinite(pair.fixed).all() and np.isfinite(pair.moving).all()
        assert (pair.fixed_modality, pair.moving_modality) == ("optical", "sar")


def test_the_prealign_affine_maps_optical_landmarks_onto_the_sar_ones(unlabeled_dir):
    """The affine maps optical pixels to SAR pixels (within the few px the README gives), and the SAR image on
    the optical grid holds, at each optical pixel, the SAR image sampled where the affine sends that pixel."""
    record = next(r for r in read_unlabeled(unlabeled_dir) if r.prealign_path is not None)
    affine = read_prealign(record.prealign_path)
    points = _points(
        record.prealign_path.with_name(record.prealign_path.name.replace("_H_opt2sar_affinefit.txt", "_points.csv"))
    )
    mapped = points[:, :2] @ affine[:2, :2].T + affine[:2, 2]
    error = np.hypot(*(mapped - points[:, 2:]).T)
    assert np.median(error) < 8 and error.max() < 15, error  # the file says: fit RMSE 5.8 px, max 11.3 px
    pair = load_unlabeled_pair(record)
    sar = read_image(record.moving_path)
    top, left = pair.offset
    for x, y in points[:5, :2].astype(int):
        if top <= y < top + pair.fixed.shape[1] and left <= x < left + pair.fixed.shape[2]:
            sx, sy = affine[:2] @ (x, y, 1.0)
            expected = [ndimage.map_coordinates(band, [[sy], [sx]], order=1)[0] for band in sar]
            np.testing.assert_allclose(pair.moving[:, y - top, x - left], expected, rtol=1e-4, atol=1e-3)


def test_a_malformed_prealign_file_is_one_line(tmp_path):
    bad = tmp_path / "affine.txt"
    bad.write_text("# comment\n1 0 3\n")
    with pytest.raises(InputError, match="2x3 affine"):
        read_prealign(bad)
    with pytest.raises(InputError, match="pairs.csv"):
        read_unlabeled(tmp_path)


def _tiny_config(tmp_path, pack, self_supervised: float) -> TrainConfig:
    data = json.loads(open("configs/train_small.json").read())
    data.update(
        pack=str(pack),
        out=str(tmp_path / "run"),
        crop=64,
        margin=16,
        batch=2,
        holdout=0.0,
        model={"channels": [8, 16, 16, 16], "hidden": 16, "refine_hidden": 8},
        losses={**data.get("losses", {}), "self_supervised": self_supervised},
        stages=[{"name": "field", "steps": 2}, {"name": "joint", "steps": 1}],
    )
    return TrainConfig.from_dict(data)


def _labelled(n: int = 4, size: int = 96) -> list[PackedPair]:
    rng = np.random.default_rng(0)
    images = [(rng.random((size, size)) * 255).astype(np.uint8) for _ in range(n)]
    return [PackedPair(img, 255 - img, "optical", "sar", "test", f"p{i}") for i, img in enumerate(images)]


def test_unlabeled_pairs_train_the_self_supervised_term_only(unlabeled_dir, tmp_path):
    unlabeled = unlabeled_pairs(unlabeled_dir)
    assert len(unlabeled) > 22  # the 1000 px pair and the 921 px one come in several 384 px tiles
    assert all(p.doubtful == UNLABELED and max(p.fixed.shape) <= 384 for p in unlabeled)
    write_pack(_labelled() + unlabeled, tmp_path / "pack.npz")
    packed = read_pack(tmp_path / "pack.npz")
    assert [p.pair_id for p in trusted_pairs(packed)] == ["p0", "p1", "p2", "p3"]  # never a supervised target
    assert len(self_supervised_pairs(packed)) == len(unlabeled)

    trainer = Trainer(_tiny_config(tmp_path, tmp_path / "pack.npz", 0.5), log=lambda _: None)
    assert {p.pair_id for p in trainer.train_pairs} == {"p0", "p1", "p2", "p3"}
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    record = trainer.run()["record"]
    field, joint = record["history"]
    for entry in (field, joint):
        assert np.isfinite(entry["loss"]["self_supervised"]) and entry["loss"]["self_supervised"] > 0, entry
    assert any(not np.allclose(before[k], v) for k, v in trainer.model.state_dict().items())


def test_the_self_supervised_term_without_unlabeled_pairs_says_how_to_pack_them(tmp_path):
    write_pack(_labelled(), tmp_path / "pack.npz")
    with pytest.raises(InputError, match="--unlabeled"):
        Trainer(_tiny_config(tmp_path, tmp_path / "pack.npz", 0.5), log=lambda _: None)


def test_unlabeled_without_a_pack_to_build_is_one_line(tmp_path, capsys):
    from dsmar.cli import main

    assert main(["train", "--config", "configs/train_small.json", "--unlabeled", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--build-pack" in err, err
