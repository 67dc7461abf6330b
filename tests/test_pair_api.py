"""Contract 2's door: shapes, dtypes, modalities and bad input, for every shipped method."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kernel.errors import InputError
from models import available_methods, register_pair

RNG = np.random.default_rng(0)


@pytest.mark.parametrize(
    ("fixed", "moving", "message"),
    [
        (np.zeros((64, 64)), np.zeros((64, 65)), "must share H, W"),
        (np.full((64, 64), np.nan), RNG.random((64, 64)), "fixed image has no valid pixels"),
        (RNG.random((64, 64)), np.full((2, 64, 64), np.inf), "moving image has no valid pixels"),
        (RNG.random((64,)), RNG.random((64,)), "shape (H, W) or (C, H, W)"),
        (RNG.random((16, 16)), RNG.random((16, 16)), "at least 32 x 32"),
        (np.array([["a"] * 64] * 64), RNG.random((64, 64)), "real numeric array"),
    ],
)
def test_bad_input_is_one_clear_error(fixed, moving, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        register_pair(fixed, moving, method="identity")


def test_unknown_method_and_modality_are_named():
    image = RNG.random((64, 64))
    with pytest.raises(InputError, match="unknown method 'nope'; choose one of"):
        register_pair(image, image, method="nope")
    with pytest.raises(InputError, match="moving_modality 'radar' is not one of"):
        register_pair(image, image, moving_modality="radar", method="identity")


def test_contract_shapes_and_types_from_integer_multiband_input():
    fixed = RNG.integers(0, 255, (3, 80, 96), dtype=np.uint8)
    moving = RNG.integers(0, 4000, (2, 80, 96)).astype(np.int16)
    r = register_pair(fixed, moving, fixed_modality="optical", moving_modality="sar", method="identity")
    assert r.displacement.shape == (2, 80, 96) and r.displacement.dtype == np.float32
    assert r.confidence.shape == (80, 96) and r.confidence.dtype == np.float32
    assert r.warped.shape == (2, 80, 96) and r.warped.dtype == np.float32
    np.testing.assert_array_equal(r.warped, moving.astype(np.float32))


def test_shipped_methods_include_the_baselines():
    assert {"identity", "phase", "cfog", "mind"} <= set(available_methods())


def test_bad_input_from_a_script_is_one_line_without_traceback():
    code = "import numpy as np; from models import register_pair; register_pair(np.zeros((64,64)), np.zeros((64,70)))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 1 and "InputError: fixed and moving must share H, W" in proc.stderr


def test_gray_conversion_keeps_nodata_quietly():
    import warnings

    from models.preprocess import to_gray

    image = RNG.random((3, 40, 40)).astype(np.float32)
    image[:, :5] = np.nan
    image[0, 10] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gray = to_gray(image, "optical")
    assert np.isnan(gray[:5]).all() and np.isfinite(gray[5:]).all()
    assert np.nanmin(gray) >= 0 and np.nanmax(gray) <= 1
