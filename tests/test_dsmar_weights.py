"""Weights: round trip through save/load, and a clear WeightsError on a wrong or missing checksum."""

import json
import shutil

import numpy as np
import pytest
import torch

from kernel.errors import WeightsError
from models.dsmar import DSMAR, DSMARConfig
from models.dsmar.weights import load_weights, save_weights

SMALL = DSMARConfig(channels=(8, 16, 16, 16), hidden=16, refine_hidden=8)


def test_round_trip_keeps_config_record_and_outputs(tmp_path):
    model = DSMAR(SMALL).eval()
    meta = save_weights(model, tmp_path / "m.pt", {"seed": 3, "modalities": ["optical", "sar"]})
    assert json.loads((tmp_path / "m.json").read_text())["sha256"] == meta["sha256"]
    loaded, info = load_weights(tmp_path / "m.pt")
    assert loaded.config == SMALL
    assert info["record"]["seed"] == 3
    x = torch.rand(1, 2, 32, 32)
    ids = torch.zeros(1, dtype=torch.long)
    with torch.no_grad():
        a = model(x, x, ids, ids).field
        b = loaded(x, x, ids, ids).field
    assert torch.allclose(a, b, rtol=1e-2, atol=2e-2)  # stored in float16


def test_wrong_checksum_is_a_clear_error(tmp_path):
    save_weights(DSMAR(SMALL), tmp_path / "m.pt")
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_weights(tmp_path / "m.pt", expected_sha256="0" * 64)
    sidecar = tmp_path / "m.json"
    meta = json.loads(sidecar.read_text())
    meta["sha256"] = "f" * 64
    sidecar.write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        load_weights(tmp_path / "m.pt")


def test_missing_weights_or_checksum(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_weights(tmp_path / "none.pt")
    save_weights(DSMAR(SMALL), tmp_path / "m.pt")
    (tmp_path / "m.json").unlink()
    with pytest.raises(WeightsError, match="no sha256"):
        load_weights(tmp_path / "m.pt")


def test_shipped_weights_match_their_checksum():
    model, meta = load_weights()
    assert meta["bytes"] < 10 * 2**20
    assert meta["record"]["data_sha256"] and meta["record"]["seed"] is not None


def _pair():
    from scipy import ndimage

    fixed = ndimage.gaussian_filter(np.random.default_rng(1).random((96, 96)), 2).astype(np.float32)
    return fixed, np.roll(fixed, (1, -2), axis=(0, 1)) * 3.0 + 1.0


def test_dsmar_defaults_are_the_weights_sidecar_inference_settings(tmp_path):
    """No option given, `dsmar` runs with the "inference" of its weights' sidecar: the shipped ones for the shipped
    weights (what the cube records), and another sidecar's for a copy of the weights that carries other ones."""
    from models import register_pair
    from models.api import method_spec
    from models.dsmar.weights import DEFAULT_WEIGHTS

    shipped = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())["inference"]
    settings = {k: v for k, v in shipped.items() if k != "tuned"}
    assert dict(method_spec("dsmar").settings) == settings  # what the cube records and fingerprints
    fixed, moving = _pair()
    default = register_pair(fixed, moving, "optical", "sar", method="dsmar").displacement
    explicit = register_pair(fixed, moving, "optical", "sar", method="dsmar", **settings).displacement
    np.testing.assert_array_equal(default, explicit)

    plain = {"augment": 1, "iterations": 1, "polish": 0, "trend": "field", "scale": 1}
    assert plain != settings
    copy = tmp_path / "copy.pt"
    shutil.copyfile(DEFAULT_WEIGHTS, copy)
    sidecar = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    copy.with_suffix(".json").write_text(json.dumps({**sidecar, "file": copy.name, "inference": plain}))
    other = register_pair(fixed, moving, "optical", "sar", method="dsmar", weights=str(copy)).displacement
    np.testing.assert_array_equal(
        other, register_pair(fixed, moving, "optical", "sar", method="dsmar", **plain).displacement
    )
    assert np.abs(other - default).max() > 1e-3  # the settings change the field: the comparison above can fail
