"""Weights: round trip through save/load, and a clear WeightsError on a wrong or missing checksum."""

import json

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
