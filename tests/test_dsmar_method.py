"""The shipped DS-MAR through the pair API: a known warp on real eval pairs, recovered."""

import numpy as np
import pytest

from benchmarks.accuracy import dense_case
from datagen.pairs import read_pairs
from models import register_pair


@pytest.mark.parametrize("category", ["optical-infrared", "optical-map"])
@pytest.mark.parametrize("spec", ["dsmar", "dsmar:polish=0:augment=1"])
def test_shipped_model_recovers_a_known_warp_better_than_identity(pairs_dir, category, spec):
    """The benchmark's own dense case: warped moving image valid everywhere (no border to read); with the
    default inference settings and with the network alone (one frame, no classical polish)."""
    record = next(r for r in read_pairs(pairs_dir, "eval") if r.category == category and r.gt_kind == "similarity")
    scores = dense_case(record, ("identity", spec), seed=11)["methods"]
    dsmar, identity = scores[spec], scores["identity"]
    assert dsmar["recovery"]["median"] < 0.5 * identity["recovery"]["median"]
    assert dsmar["epe"]["median"] < 0.75 * identity["epe"]["median"]
    assert dsmar["folding"] < 0.005


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
