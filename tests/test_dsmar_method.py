"""The shipped DS-MAR through the pair API, scored on real eval pairs against the best classical method.

The benchmark's own dense case (benchmarks.accuracy.dense_case, seed 11): a known smooth warp on the aligned
pair, the warped moving image valid everywhere; EPE against the warp's inverse and warp recovery, medians
in px. Limits sit at the values measured on 2026-12-05 (written beside each) with the margin stated there.
"""

import numpy as np
import pytest

from benchmarks.accuracy import dense_case
from benchmarks.results import DenseScore
from datagen.pairs import read_pairs
from models import register_pair
from tests.conftest import default_method
from tests.untrained_weights import write_untrained

# One frame at full resolution (its training resolution), no matching: only the weights shape the field.
NETWORK_ALONE = "dsmar:polish=0:augment=1:scale=1"
MARGIN = 1.15  # the default may be this much worse than `mind` (15 %): seeds and BLAS threads move scores ~5 %
_scores: dict[tuple[str, tuple[str, ...]], dict[str, DenseScore]] = {}


def _record(pairs_dir, category):
    return next(r for r in read_pairs(pairs_dir, "eval") if r.category == category and r.gt_kind == "similarity")


def _scores_of(pairs_dir, category, methods, pair_id: str | None = None) -> dict[str, DenseScore]:
    """Scores per method spec on the category's similarity eval pair (or the eval pair `pair_id`), computed once
    per session."""
    key = (pair_id or category, methods)
    if key not in _scores:
        record = (
            next(r for r in read_pairs(pairs_dir, "eval") if r.pair_id == pair_id)
            if pair_id
            else _record(pairs_dir, category)
        )
        case = dense_case(record, methods, seed=11)
        _scores[key] = {m: case.dense(m) for m in methods}
    return _scores[key]


def _shipped(pairs_dir, category) -> dict[str, DenseScore]:
    return _scores_of(pairs_dir, category, ("identity", "mind", default_method(), NETWORK_ALONE))


# Measured medians (EPE / recovery, px): infrared (srif-infrared-141): identity 7.32 / 7.42, mind 0.99 / 0.64,
# dsmar 1.00 / 0.55; map (srif-map-141): identity 4.88 / 4.96, mind 2.01 / 0.88, dsmar 1.52 / 0.59.
@pytest.mark.parametrize(
    "category,metric",
    [
        ("optical-infrared", "epe"),
        ("optical-infrared", "recovery"),
        ("optical-map", "epe"),
        ("optical-map", "recovery"),
    ],
)
def test_default_is_not_worse_than_mind(pairs_dir, category, metric):
    scores = _shipped(pairs_dir, category)
    default, mind = scores[default_method()], scores["mind"]
    assert getattr(default, metric).median <= MARGIN * getattr(mind, metric).median, (default, mind)
    assert default.folding < 0.005  # measured 0.0


# Warp recovery medians (px) measured on 2026-12-07, default / mind: srif-infrared-141 0.55 / 0.64 (optical-infrared),
# cfog-vis-ir-1 0.07 / 0.13 (optical-infrared, another source), cfog-opt-sar-2-geotiff 0.19 / 0.22 (optical-SAR).
# The benchmark's dense case fills the border: it scores an inner crop where the warped image is valid everywhere.
@pytest.mark.parametrize("pair_id", ["srif-infrared-141", "cfog-vis-ir-1", "cfog-opt-sar-2-geotiff"])
def test_the_default_with_the_shipped_weights_beats_mind_on_warp_recovery(pairs_dir, pair_id):
    methods = ("mind", default_method())
    scores = _scores_of(pairs_dir, None, methods, pair_id)
    default, mind = scores[default_method()], scores["mind"]
    assert default.recovery.median < mind.recovery.median, (default, mind)
    assert default.folding < 0.005  # measured 0.0


# The network alone, measured (EPE / recovery medians, px): infrared 2.38 / 1.73, map 3.54 / 1.22; with untrained
# weights 16.0 / 7.34 and 8.20 / 4.29. The limits lie 19-35 % above the measurements.
@pytest.mark.parametrize("category,epe,recovery", [("optical-infrared", 3.2, 2.15), ("optical-map", 4.2, 1.65)])
def test_the_network_alone_recovers_a_known_warp(pairs_dir, category, epe, recovery):
    scores = _shipped(pairs_dir, category)[NETWORK_ALONE]
    assert scores.epe.median < epe and scores.recovery.median < recovery, scores
    assert scores.folding < 0.005  # measured 0.0


# The coarse search looks around the network's affine start: with untrained weights of the same architecture the
# default scores 29.4 / 4.45 px (EPE / recovery) on srif-map-141 (400 px), against the shipped weights' 1.52 / 0.59.
# On an image under two coarse windows a side (srif-infrared-141, 184 px) it looks around the start's shift at the
# centre, which an untrained network leaves near no motion, within the search's reach: 1.00 / 0.54 against 1.00 / 0.55.
@pytest.mark.parametrize(
    "category",
    [
        "optical-map",
        pytest.param(
            "optical-infrared",
            marks=pytest.mark.xfail(
                strict=True,
                raises=AssertionError,
                reason="on a small image the search looks around the start's centre shift, and an untrained "
                "network's lies within its reach: the network's rotation and scale do not matter there",
            ),
        ),
    ],
)
def test_untrained_weights_score_clearly_worse_than_the_shipped_ones(pairs_dir, tmp_path, category):
    untrained = write_untrained(tmp_path / "untrained.pt")
    spec = f"dsmar:weights={untrained}"
    trained = _shipped(pairs_dir, category)[default_method()]
    fresh = _scores_of(pairs_dir, category, (spec,))[spec]
    for metric in ("epe", "recovery"):
        assert getattr(fresh, metric).median >= 1.5 * getattr(trained, metric).median, (metric, fresh, trained)


def test_dsmar_is_registered_and_handles_small_odd_inputs():
    rng = np.random.default_rng(0)
    fixed = rng.random((64, 77)).astype(np.float32)
    moving = np.roll(fixed, 2, axis=1) * 40.0 - 20.0  # another radiometry
    moving[:3] = np.nan
    result = register_pair(fixed, moving, "optical", "sar", method="dsmar")
    assert result.displacement.shape == (2, 64, 77) and np.isfinite(result.displacement).all()
    assert result.warped.shape == (64, 77)
    # The roll moves content 2 px right: (dy, dx) = (0, 2) away from the no-data rows and the wrapped columns.
    error = np.abs(result.displacement[:, 3:, 4:-4] - np.array([0.0, 2.0], np.float32)[:, None, None])
    assert error.max() < 0.3, error.max()  # measured 0.10


@pytest.mark.parametrize("options", [{"trend": "global"}, {"polish": [5, "3"]}, {"polish": -2}])
def test_dsmar_refuses_bad_inference_options_in_one_line(options):
    from kernel.errors import InputError

    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    with pytest.raises(InputError, match="trend|polish"):
        register_pair(image, image, "optical", "sar", method="dsmar", augment=1, **options)


def test_the_default_method_copies_only_lattice_points_and_its_result_to_the_host(pairs_dir, monkeypatch):
    """The all-device path: from the pair's upload to the returned field, nothing image-sized comes back to the host
    (`Tensor.numpy`), only the few hundred lattice points the robust trend fits read. The CPU reads its percentiles
    through numpy's view of the image; here the device's selection stands in for it, as on a GPU."""
    import torch

    import models.preprocess
    from datagen.pairs import load_aligned_pair
    from models.methods.dsmar import make_dsmar

    pair = load_aligned_pair(_record(pairs_dir, "optical-sar"))
    fixed, moving = pair.fixed[:, :256, :256], np.roll(pair.moving, (2, -3), axis=(1, 2))[:, :256, :256]
    monkeypatch.setattr(models.preprocess, "percentiles", models.preprocess.selected_percentiles)
    copied: list[int] = []
    to_host = torch.Tensor.numpy

    def recorded(self, *args, **kwargs):
        copied.append(self.numel())
        return to_host(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "numpy", recorded)
    field, confidence = make_dsmar()(fixed, moving, fixed_modality="optical", moving_modality="sar", device="cpu")
    monkeypatch.undo()
    h, w = fixed.shape[1:]
    assert field.shape == (2, h, w) and confidence.shape == (h, w) and h * w > 4 * 4096
    assert [n for n in copied if n > 4096] == [2 * h * w, h * w]  # the field and its confidence
    assert copied[:-2] and max(copied[:-2]) <= 4096
