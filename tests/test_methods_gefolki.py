"""The optional GeFolki peer: Contract-1 sign, its scikit-image compat fix, and a clear error without it."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from datagen.pairs import load_aligned_pair, read_pairs
from kernel.errors import InputError
from kernel.fields import affine_field
from kernel.warp import warp_image
from models import register_pair
from models.methods.gefolki import pyramid_levels


def test_gefolki_recovers_a_shift_with_the_contract_sign(pairs_dir):
    pytest.importorskip("gefolki")
    record = next(r for r in read_pairs(pairs_dir, "eval") if r.pair_id == "cfog-opt-sar-1")
    pair = load_aligned_pair(record)
    h, w = pair.fixed.shape[1:]
    window = (slice(None), slice(h // 2 - 128, h // 2 + 128), slice(w // 2 - 128, w // 2 + 128))
    fixed, moving = pair.fixed[window], pair.moving[window]
    warp = affine_field(fixed.shape[1:], (3.5, -4.5))
    inner = (slice(None), slice(64, -64), slice(64, -64))
    # Same image: the field is -w exactly where the sign follows Contract 1.
    same = register_pair(fixed, warp_image(fixed, warp), "optical", "optical", method="gefolki")
    assert np.median(same.displacement[inner].reshape(2, -1), axis=1) == pytest.approx([-3.5, 4.5], abs=0.3)
    # Optical vs SAR: GeFolki is biased by about 2-3 px on this pair, but recovers the known warp on top.
    d0 = register_pair(fixed, moving, "optical", "sar", method="gefolki").displacement
    d1 = register_pair(fixed, warp_image(moving, warp), "optical", "sar", method="gefolki").displacement
    assert np.median((d1 - d0)[inner].reshape(2, -1), axis=1) == pytest.approx([-3.5, 4.5], abs=0.5)


def test_missing_gefolki_is_a_clear_input_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gefolki", None)
    with pytest.raises(InputError, match=r"pip install dsmar\[bench\]"):
        register_pair(np.ones((64, 64)), np.ones((64, 64)), method="gefolki")


def test_pyramid_depth_fits_the_image():
    assert pyramid_levels((2000, 3000)) == 6
    assert pyramid_levels((256, 300)) == 4
    assert pyramid_levels((40, 40)) == 1
