"""`python -m models.training.soup`: the average of weights of one network, its record, and clear refusals."""

import json

import torch

from models.dsmar.network import DSMAR, DSMARConfig
from models.dsmar.weights import load_weights, save_weights
from models.training.soup import main

TINY = {"channels": [8, 16, 16, 16], "hidden": 16, "refine_hidden": 8}
SEEN = ["map", "optical", "other", "sar"]


def _weights(path, seed, config=TINY, modalities=SEEN, inference=None):
    torch.manual_seed(seed)
    record = {"seed": seed, "data_sha256": "d" * 64, "modalities": modalities}
    meta = save_weights(DSMAR(DSMARConfig.from_dict(config)), path, record)
    if inference:
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps({**json.loads(sidecar.read_text()), "inference": inference}))
    return meta["sha256"]


def test_a_soup_is_the_mean_of_its_ingredients_and_keeps_what_the_method_reads(tmp_path):
    shas = [_weights(tmp_path / "a.pt", 1, inference={"polish": [5]}), _weights(tmp_path / "b.pt", 2)]
    a, b = (load_weights(tmp_path / name)[0].state_dict() for name in ("a.pt", "b.pt"))
    # Over an older soup, whose sidecar settings give way to the first ingredient's; then over that ingredient itself.
    _weights(tmp_path / "old.pt", 3, inference={"polish": [3]})
    assert main([str(tmp_path / "old.pt"), str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 0
    assert load_weights(tmp_path / "old.pt")[1]["inference"] == {"polish": [5]}
    assert main([str(tmp_path / "a.pt"), str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 0
    soup, meta = load_weights(tmp_path / "a.pt")
    for name, tensor in soup.state_dict().items():
        if tensor.is_floating_point():  # stored as float16, like every weights file
            assert torch.allclose(tensor, (a[name] + b[name]) / 2, atol=2e-3, rtol=1e-3), name
    assert [x["sha256"] for x in meta["record"]["soup"]["ingredients"]] == shas
    assert [x["seed"] for x in meta["record"]["soup"]["ingredients"]] == [1, 2]
    assert meta["record"]["modalities"] == SEEN  # which embeddings the method uses (models.dsmar.infer)
    assert meta["record"]["seed"] == 1 and meta["record"]["data_sha256"] == "d" * 64
    assert meta["inference"] == {"polish": [5]}
    # A soup of that soup names the soup's own ingredients by checksum only: the record stays one level deep.
    assert main([str(tmp_path / "c.pt"), str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]) == 0
    first = load_weights(tmp_path / "c.pt")[1]["record"]["soup"]["ingredients"][0]
    assert first["soup_of"] == shas and "soup" not in first and "record" not in first


def test_weights_of_another_network_or_other_modalities_do_not_average(tmp_path, capsys):
    _weights(tmp_path / "a.pt", 1)
    _weights(tmp_path / "b.pt", 2, config={**TINY, "hidden": 8})
    _weights(tmp_path / "c.pt", 3, modalities=["optical", "other", "sar"])
    before = (tmp_path / "a.pt").read_bytes()
    for other, reason in (("b.pt", "another network"), ("c.pt", "other modalities")):
        assert main([str(tmp_path / "a.pt"), str(tmp_path / "a.pt"), str(tmp_path / other)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and reason in err
    assert (tmp_path / "a.pt").read_bytes() == before  # nothing written over
