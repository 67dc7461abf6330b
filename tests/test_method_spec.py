"""A method's identity: `models.api.method_spec` parses and checks a spec once, and resolves the weights and
settings the method will run with (DSMAR_WEIGHTS included); `MethodSpec` round-trips through JSON."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from kernel.contracts import MethodSpec
from kernel.errors import InputError, WeightsError
from models.api import method_spec, register_pair
from models.dsmar.weights import DEFAULT_WEIGHTS, WEIGHTS_ENV, load_weights, save_weights, sha256_file

SHIPPED = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
TUNED = {k: v for k, v in SHIPPED["inference"].items() if k != "tuned"}


def resaved_weights(directory):
    """The shipped network saved again with another record: the same weights under another checksum."""
    path = directory / "other.pt"
    shutil.copy(DEFAULT_WEIGHTS.with_suffix(".json"), path.with_suffix(".json"))  # keeps "inference"
    model, meta = load_weights()
    save_weights(model, path, {**meta["record"], "resaved": True})
    return path


@pytest.mark.parametrize(
    ("text", "name", "options"),
    [
        ("identity", "identity", {}),
        (" cfog:fine_radius=3 ", "cfog", {"fine_radius": 3}),
        ("phase:max_shift=16:whitening=0.25", "phase", {"max_shift": 16.0, "whitening": 0.25}),
        ("dsmar:augment=1:polish=[5,3]", "dsmar", {"augment": 1, "polish": [5, 3]}),
        ("dsmar:device=cuda:0:trend=field", "dsmar", {"device": "cuda:0", "trend": "field"}),
    ],
)
def test_good_specs_give_their_name_and_normalised_options(text, name, options):
    spec = method_spec(text)
    assert (spec.name, spec.kwargs) == (name, options)
    assert method_spec(spec.text) == spec  # the canonical text parses back to the same spec
    assert MethodSpec.from_json(spec.to_json()) == spec and hash(MethodSpec.from_json(spec.to_json())) == hash(spec)


def test_a_methods_settings_are_its_tuned_defaults_merged_with_its_options():
    assert method_spec("cfog").settings == () and method_spec("cfog").weights_sha256 is None
    assert method_spec("dsmar").weights_sha256 == SHIPPED["sha256"] == sha256_file(DEFAULT_WEIGHTS)
    assert dict(method_spec("dsmar").settings) == TUNED
    assert dict(method_spec("dsmar:augment=2").settings) == {**TUNED, "augment": 2}
    fingerprints = {method_spec(t).fingerprint for t in ("identity", "cfog", "cfog:fine_radius=3", "dsmar")}
    assert len(fingerprints) == 4 and method_spec("dsmar:augment=2").fingerprint != method_spec("dsmar").fingerprint
    assert method_spec("dsmar", augment=TUNED["augment"]).fingerprint == method_spec("dsmar").fingerprint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope", "unknown method 'nope'; choose one of cfog, dsmar"),
        ("dsmar:augmnet=2", "unknown option(s) augmnet for method dsmar; known: augment,"),
        ("identity:x=1", "unknown option(s) x for method identity; known: none"),
        ("dsmar:augment", "method option 'augment' in 'dsmar:augment' is not key=value"),
        ("dsmar:augment=3", "method dsmar option augment=3: must be one of 1, 2, 4, 8"),
        ("dsmar:polish=[5,-1]", "method dsmar option polish=[5, -1]: must be an integer >= 0 or a list of them"),
        ("dsmar:trend=up", "method dsmar option trend='up': must be one of affine, best, field"),
        ("cfog:fine_radius=2.5", "method cfog option fine_radius=2.5: must be an integer >= 0"),
        ("phase:max_shift=far", "method phase option max_shift='far': must be a number >= 0"),
    ],
)
def test_a_bad_spec_is_one_input_error_line(text, message):
    with pytest.raises(InputError) as err:
        method_spec(text)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_dsmar_weights_gives_the_checksum_of_the_weights_it_names(tmp_path, monkeypatch):
    other = resaved_weights(tmp_path)
    monkeypatch.setenv(WEIGHTS_ENV, str(other))
    spec = method_spec("dsmar")
    assert spec.weights_sha256 == sha256_file(other) != SHIPPED["sha256"]
    assert (
        dict(spec.settings) == TUNED
        and spec.fingerprint != MethodSpec("dsmar", {}, SHIPPED["sha256"], TUNED).fingerprint
    )
    assert method_spec(f"dsmar:weights={str(DEFAULT_WEIGHTS)!r}").weights_sha256 == SHIPPED["sha256"]
    assert method_spec("dsmar", weights=DEFAULT_WEIGHTS).settings == spec.settings  # the path is not a setting
    broken = tmp_path / "broken.pt"
    shutil.copy(other, broken)
    broken.with_suffix(".json").write_text(json.dumps({"sha256": "0" * 64}))
    monkeypatch.setenv(WEIGHTS_ENV, str(broken))
    with pytest.raises(WeightsError, match="checksum mismatch"):
        method_spec("dsmar")


def test_a_spec_runs_only_where_it_resolves_to_the_same_weights_and_settings():
    fixed = np.random.default_rng(0).random((64, 64), dtype=np.float32)
    assert register_pair(fixed, fixed, method=method_spec("cfog:fine_radius=3")).method == "cfog"
    elsewhere = MethodSpec("cfog", {"fine_radius": 3}, None, {"fine_radius": 4})  # as another process resolved it
    with pytest.raises(InputError, match="resolves here to weights None and settings"):
        register_pair(fixed, fixed, method=elsewhere)


def test_spec_values_read_as_json_as_the_canonical_text_writes_them_else_as_python_literals():
    from models.api import _parse_spec

    parsed = _parse_spec('x:a=true:b=null:c={"k": [1, 2.5]}:d=True:e=(1, 2):f=field')
    assert parsed == ("x", {"a": True, "b": None, "c": {"k": [1, 2.5]}, "d": True, "e": (1, 2), "f": "field"})
