"""`python -m models.training.soup`: the average of weights of one network, its record, and a clear refusal."""

import json

import torch

from models.dsmar.network import DSMAR, DSMARConfig
from models.dsmar.weights import load_weights, save_weights
from models.training.soup import main

TINY = {"channels": [8, 16, 16, 16], "hidden": 16, "refine_hidden": 8}


def _weights(path, seed, config=TINY, inference=None):
    torch.manual_seed(seed)
    meta = save_weights(DSMAR(DSMARConfig.from_dict(config)), path, {"seed": seed, "data_sha256": "d" * 64})
    if inference:
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "inference": inference}))
    return meta["sha256"]


def test_a_soup_is_the_mean_of_its_ingredients_and_names_them(tmp_path):
    shas = [_weights(tmp_path / "a.pt", 1, inference={"polish": [5]}), _weights(tmp_path / "b.pt", 2)]
    assert main([str(tmp_path / "soup.pt"), str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 0
    soup, meta = load_weights(tmp_path / "soup.pt")
    a, b = (load_weights(tmp_path / name)[0].state_dict() for name in ("a.pt", "b.pt"))
    for name, tensor in soup.state_dict().items():
        if tensor.is_floating_point():  # stored as float16, like every weights file
            assert torch.allclose(tensor, (a[name] + b[name]) / 2, atol=2e-3, rtol=1e-3), name
    assert [x["sha256"] for x in meta["record"]["soup"]["ingredients"]] == shas
    assert meta["record"]["seed"] == 1 and meta["record"]["data_sha256"] == "d" * 64
    assert meta["inference"] == {"polish": [5]}  # the first ingredient's method settings come along


def test_weights_of_another_network_do_not_average(tmp_path, capsys):
    _weights(tmp_path / "a.pt", 1)
    _weights(tmp_path / "b.pt", 2, config={**TINY, "hidden": 8})
    assert main([str(tmp_path / "soup.pt"), str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "another network" in err
    assert not (tmp_path / "soup.pt").exists()
