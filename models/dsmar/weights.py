"""Shipped weights: a .pt file (config + fp16 state dict + training record) and a .json with its sha256
(plus "inference": defaults of the method tuned on the train split, such as `iterations`).

Loading always checks the checksum and uses `torch.load(weights_only=True)`, so a wrong or
tampered file fails with a one-line WeightsError instead of a half-loaded network. `weights_path` is the
one rule for which file the `dsmar` method uses; `checked_metadata` is what its identity records.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from kernel.errors import WeightsError
from models.dsmar.network import DSMAR, DSMARConfig

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "dsmar.pt"
WEIGHTS_ENV = "DSMAR_WEIGHTS"  # an environment variable reaches every worker process a run starts


def weights_path(weights: str | Path | None = None) -> Path:
    """The weights file `dsmar` uses: `weights` if given, else $DSMAR_WEIGHTS, else the shipped file."""
    return Path(weights or os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS)


def pin_weights_env() -> None:
    """Make a relative $DSMAR_WEIGHTS absolute in this process, so the worker processes it starts resolve the
    same file wherever they run from."""
    given = os.environ.get(WEIGHTS_ENV)
    if given:
        os.environ[WEIGHTS_ENV] = os.path.abspath(os.path.expanduser(given))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_weights(model: DSMAR, path: Path, record: dict | None = None, settings: dict | None = None) -> dict:
    """Write `path` (.pt) and its sidecar `path.with_suffix('.json')` (with `settings`, `write_sidecar`); return the
    sidecar's content."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().cpu().to(torch.float16) if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    record = json.loads(json.dumps(record or {}, default=str))  # plain types: weights_only loads it
    tmp = path.with_suffix(".tmp")
    torch.save({"config": model.config.to_dict(), "state_dict": state, "record": record}, tmp)
    tmp.replace(path)
    return write_sidecar(path, settings)


def write_sidecar(path: Path, settings: dict | None = None) -> dict:
    """(Re)write `path.with_suffix('.json')` from the .pt itself: checksum, size, config, record, and keys added after
    training (inference settings, GPU speed): `settings`, over those the sidecar already had."""
    path = Path(path)
    blob = torch.load(path, map_location="cpu", weights_only=True)
    meta = {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "config": blob["config"],
        "parameters": sum(v.numel() for v in blob["state_dict"].values() if v.is_floating_point()),
        "record": blob["record"],
    }
    sidecar = path.with_suffix(".json")
    if sidecar.exists():  # keys added after training (inference settings, GPU speed) are kept
        previous = json.loads(sidecar.read_text())
        meta.update({k: v for k, v in previous.items() if k not in meta})
    meta.update(settings or {})
    sidecar.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return meta


def checked_metadata(path: Path, expected_sha256: str | None = None) -> dict:
    """The sidecar metadata of `path` with the file's own sha256, once it matches the recorded (or given)
    checksum; a missing file or checksum, or a mismatch, is one WeightsError line."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"DS-MAR weights not found at {path}; reinstall dsmar or run `dsmar train`")
    sidecar = path.with_suffix(".json")
    meta = json.loads(sidecar.read_text()) if sidecar.exists() else {}
    expected = expected_sha256 or meta.get("sha256")
    if not expected:
        raise WeightsError(f"no sha256 recorded for {path} (expected {sidecar}); refusing to load unchecked weights")
    actual = sha256_file(path)
    if actual != expected:
        raise WeightsError(f"checksum mismatch for {path}: sha256 {actual[:12]}..., expected {expected[:12]}...")
    return {**meta, "sha256": actual}


def load_weights(path: Path = DEFAULT_WEIGHTS, expected_sha256: str | None = None) -> tuple[DSMAR, dict]:
    """Rebuild the network from `path`; the checksum comes from the sidecar .json unless given."""
    path = Path(path)
    meta = checked_metadata(path, expected_sha256)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        model = DSMAR(DSMARConfig.from_dict(blob["config"]))
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in blob["state_dict"].items()})
    except (RuntimeError, KeyError, TypeError) as err:
        raise WeightsError(f"DS-MAR weights at {path} do not fit the network: {err}") from err
    model.eval()
    return model, {**meta, "record": blob.get("record", meta.get("record", {}))}
