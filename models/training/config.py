"""Training configuration: one frozen dataclass per run, read from JSON (configs/train_*.json)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from kernel.errors import InputError
from models.dsmar.network import DSMARConfig
from models.training.augment import WarpRanges

STAGES = ("contrast", "field", "refine", "joint", "match")


@dataclass(frozen=True)
class StageConfig:
    """One stage: `name` in STAGES; it ends at `steps` or `seconds`, whichever comes first (0 = unused)."""

    name: str
    steps: int = 0
    seconds: float = 0.0
    lr: float = 1e-3


@dataclass(frozen=True)
class LossWeights:
    epe: float = 1.0
    levels: float = 0.5
    mind: float = 0.0
    # MIND-SSC (plus the folding penalty) on the pack's unlabeled real optical-SAR pairs, in the field and joint
    # stages: they have no ground truth, only the pair (`models.training.data.UNLABELED`)
    self_supervised: float = 0.0
    bending: float = 0.05
    jacobian: float = 2.0
    jacobian_margin: float = 0.3
    confidence: float = 0.1
    contrast_temperature: float = 0.07


@dataclass(frozen=True)
class TrainConfig:
    name: str = "dsmar"
    pack: str = ".dsmar-train/pack.npz"
    out: str = "runs/dsmar"
    seed: int = 0
    crop: int = 256
    margin: int = 64  # source crops are crop + 2 * margin: the warp samples inside them (no border leak)
    augment: float = 1.0  # strength of the radiometric augmentation (0 = none)
    nodata: float = 0.3  # chance of a random no-data half-plane per stream and sample
    exclude: tuple[str, ...] = ()  # pair-id prefixes left out of training, besides those with doubtful ground truth
    init: str = ""  # weights (.pt) to start from: training goes on across sessions and machines
    batch: int = 8
    holdout: float = 0.05
    device: str = "auto"
    bf16: bool = False  # bfloat16 autocast for training steps (CUDA or CPU); the ledger scores in float32
    threads: int = 0
    checkpoint_every_s: float = 60.0
    # decay of the moving average of the weights that the run validates and exports (0 = the raw weights);
    # about 1 / (1 - ema) steps are averaged (`models.training.average`)
    ema: float = 0.0
    val_batches: int = 2
    model: DSMARConfig = DSMARConfig()
    losses: LossWeights = LossWeights()
    stages: tuple[StageConfig, ...] = ()
    warp: WarpRanges = WarpRanges()

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise InputError(f"unknown training config keys: {', '.join(sorted(unknown))}")
        data = dict(data)
        stages = tuple(StageConfig(**s) for s in data.pop("stages", ()))
        for s in stages:
            if s.name not in STAGES:
                raise InputError(f"stage {s.name!r} is not one of {', '.join(STAGES)}")
            if s.steps <= 0 and s.seconds <= 0:
                raise InputError(f"stage {s.name!r} needs steps or seconds")
        if not 0.0 <= data.get("ema", 0.0) < 1.0:
            raise InputError(f"ema {data['ema']} is not in [0, 1): it is the decay of the weights' moving average")
        losses = LossWeights(**_known(LossWeights, data.pop("losses", {}), "losses"))
        warp = WarpRanges(**_known(WarpRanges, data.pop("warp", {}), "warp"))
        model = DSMARConfig.from_dict(_known(DSMARConfig, data.pop("model", {}), "model"))
        exclude = tuple(data.pop("exclude", ()))
        return cls(stages=stages, losses=losses, warp=warp, model=model, exclude=exclude, **data)

    @classmethod
    def from_json(cls, path: Path | str, **overrides) -> TrainConfig:
        path = Path(path)
        if not path.exists():
            raise InputError(f"training config {path} not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise InputError(f"training config {path} is not valid JSON: {err}") from err
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_dict(data)


def _known(kind: type, data: dict, key: str) -> dict:
    """`data` with JSON lists as tuples, refusing keys that `kind` does not have."""
    names = {f.name for f in fields(kind)}
    unknown = set(data) - names
    if unknown:
        raise InputError(f"unknown training config keys under {key!r}: {', '.join(sorted(unknown))}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


VARIANTS = ("full", "no-attention", "no-refinement", "no-jacobian")


def apply_variant(cfg: TrainConfig, variant: str) -> TrainConfig:
    """The ablations of docs/ablation.md: one component off, everything else as in `cfg`."""
    if variant not in VARIANTS:
        raise InputError(f"variant {variant!r} is not one of {', '.join(VARIANTS)}")
    data = cfg.to_dict()
    if variant == "no-attention":
        data["model"] = {**data["model"], "attention": False}
    elif variant == "no-refinement":
        data["model"] = {**data["model"], "refinement": False}
        data["stages"] = [s for s in data["stages"] if s["name"] != "refine"]
    elif variant == "no-jacobian":
        data["losses"] = {**data["losses"], "jacobian": 0.0}
    return TrainConfig.from_dict(data)


def with_budget(cfg: TrainConfig, seconds: float) -> TrainConfig:
    """Rescale the stages' `seconds` so that they add up to `seconds` (the wall-clock budget)."""
    total = sum(s.seconds for s in cfg.stages)
    if total <= 0:
        raise InputError("a time budget needs stages with `seconds`")
    data = cfg.to_dict()
    for s in data["stages"]:
        s["seconds"] = s["seconds"] * seconds / total
    return TrainConfig.from_dict(data)
