"""Grid symmetries for test-time augmentation: images and fields move between frames consistently."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.fields import random_smooth_field
from kernel.warp import warp_image
from models.dsmar import dihedral

ALL = dihedral.symmetries(8)


@pytest.mark.parametrize("sym", ALL)
def test_undo_inverts_apply(sym):
    img = np.random.default_rng(0).random((2, 5, 7)).astype(np.float32)
    field = np.random.default_rng(1).random((2, 5, 7)).astype(np.float32)
    assert np.array_equal(dihedral.undo(dihedral.apply(img, sym), sym), img)
    assert np.allclose(dihedral.undo_field(dihedral.apply_field(field, sym), sym), field)


def test_eight_distinct_symmetries():
    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    frames = {dihedral.apply(img, s).tobytes() for s in ALL}
    assert len(frames) == 8
    with pytest.raises(ValueError, match="1, 2, 4 or 8"):
        dihedral.symmetries(3)


@settings(max_examples=16, deadline=None)
@given(k=st.integers(0, 3), flip=st.booleans(), seed=st.integers(0, 2**16))
def test_warping_commutes_with_the_frame_change(k, flip, seed):
    """Warping in the rotated frame by the transformed field equals rotating the warped image."""
    rng = np.random.default_rng(seed)
    image = rng.random((24, 31)).astype(np.float32)
    field = random_smooth_field((24, 31), rng, max_shift_px=3.0)
    sym = (k, flip)
    in_frame = warp_image(dihedral.apply(image, sym), dihedral.apply_field(field, sym))
    rotated = dihedral.apply(warp_image(image, field), sym)
    both = np.isfinite(in_frame) & np.isfinite(rotated)
    assert both.mean() > 0.5
    assert np.allclose(in_frame[both], rotated[both], atol=1e-4)
