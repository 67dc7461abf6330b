"""The shared preprocessing in torch: the selection a GPU runs gives numpy's percentiles exactly, and the gray image
and block means are the same formula on every device."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from models.preprocess import block_means, gray, percentiles, selected_percentiles, to_gray

QS = (1.0, 50.0, 99.0, 0.0, 100.0, 37.5)

images = arrays(
    np.float32,
    st.tuples(st.integers(1, 40), st.integers(1, 40)),
    elements=st.one_of(
        st.floats(-1e4, 1e4, width=32), st.sampled_from([np.nan, 0.0, 1.0, 255.0])
    ),  # duplicates and no-data
)


@settings(max_examples=200, deadline=None)
@given(images)
def test_the_devices_selection_is_numpys_percentile(image):
    tensor = torch.from_numpy(image)
    valid = torch.isfinite(tensor)
    if not bool(valid.any()):
        return
    want = np.percentile(image[np.isfinite(image)], QS)
    assert selected_percentiles(tensor, valid, QS) == [float(v) for v in want]
    assert percentiles(tensor, valid, QS) == [float(v) for v in want]


@pytest.mark.parametrize("modality", ["optical", "sar", "dem"])
def test_gray_is_one_formula_from_numpy_and_torch(modality):
    rng = np.random.default_rng(0)
    image = (rng.random((3, 70, 90)) * (0.5 if modality == "sar" else 255)).astype(np.float32)  # linear power SAR
    image[:, :10] = np.nan
    image[1, 30:40] = np.nan
    out = to_gray(image, modality)
    assert np.array_equal(out, gray(torch.from_numpy(image), modality).numpy(), equal_nan=True)
    assert np.isnan(out[:10]).all() and np.isfinite(out[10:]).all() and 0 <= np.nanmin(out) < np.nanmax(out) <= 1
    assert np.isnan(to_gray(np.full((1, 8, 8), np.nan, np.float32), modality)).all()


def test_block_means_drop_a_last_partial_block_and_keep_no_data():
    image = torch.arange(2 * 5 * 7, dtype=torch.float32).reshape(2, 5, 7)
    image[0, 0, 0] = torch.nan
    small = block_means(image, 2)
    assert small.shape == (2, 2, 3)
    assert torch.isnan(small[0, 0, 0]) and not torch.isnan(small[0, 0, 1])
    assert float(small[1, 1, 2]) == float(image[1, 2:4, 4:6].mean())
