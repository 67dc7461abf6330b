"""What an accuracy benchmark run produces, typed: per-pair scores, summaries and the whole result.

Each type reads and writes its JSON form (the keys of results.json), so results on disk stay as they
were while the code reads them by attribute.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

TRACKS = ("dense", "landmarks")


def _under_keys(prefix: str, shares: dict[float, float]) -> dict[str, float]:
    return {f"{prefix}_{t:g}px": v for t, v in shares.items()}


def _under_read(prefix: str, data: dict[str, Any]) -> dict[float, float]:
    start = f"{prefix}_"
    return {float(k[len(start) : -2]): v for k, v in data.items() if k.startswith(start) and k.endswith("px")}


@dataclass(frozen=True)
class ErrorSummary:
    """Mean, median and the share under each threshold (px -> share) of a set of per-pixel errors."""

    mean: float
    median: float
    under: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "median": self.median, **_under_keys("under", self.under)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ErrorSummary:
        return cls(data["mean"], data["median"], _under_read("under", data))


@dataclass(frozen=True)
class DenseScore:
    """One method on one pair of the dense track."""

    epe: ErrorSummary
    epe_hist: list[int]  # counts over benchmarks.accuracy.HIST_EDGES
    recovery: ErrorSummary
    folding: float
    seconds: float
    megapixels: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "epe": self.epe.to_dict(),
            "epe_hist": self.epe_hist,
            "recovery": self.recovery.to_dict(),
            "folding": self.folding,
            "seconds": self.seconds,
            "megapixels": self.megapixels,
        }


@dataclass(frozen=True)
class LandmarkScore:
    """One method on one pair of the landmark track."""

    errors: ErrorSummary
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"errors": self.errors.to_dict(), "seconds": self.seconds}


@dataclass(frozen=True)
class MethodFailure:
    """A method that raised on a pair: a result to report, not a crash."""

    error: str

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.error}


MethodScore = DenseScore | LandmarkScore | MethodFailure


def _score_from_dict(data: dict[str, Any]) -> MethodScore:
    if "epe" in data:
        return DenseScore(
            ErrorSummary.from_dict(data["epe"]),
            data["epe_hist"],
            ErrorSummary.from_dict(data["recovery"]),
            data["folding"],
            data["seconds"],
            data["megapixels"],
        )
    if "errors" in data:
        return LandmarkScore(ErrorSummary.from_dict(data["errors"]), data["seconds"])
    return MethodFailure(data["error"])


@dataclass(frozen=True)
class Case:
    """One pair on one track: every method's score; `error` when the pair itself could not be read."""

    pair_id: str
    category: str
    methods: dict[str, MethodScore]
    shape: tuple[int, int] | None = None  # dense track: the scored crop
    landmarks: int | None = None  # landmark track: how many
    error: str | None = None
    trace: str | None = None
    cpu_seconds: float = 0.0

    def dense(self, method: str) -> DenseScore | None:
        score = self.methods.get(method)
        return score if isinstance(score, DenseScore) else None

    def landmark(self, method: str) -> LandmarkScore | None:
        score = self.methods.get(method)
        return score if isinstance(score, LandmarkScore) else None

    def failures(self) -> list[str]:
        """`method: error` for each failed method, then the pair's own error."""
        failed = [f"{m}: {s.error}" for m, s in self.methods.items() if isinstance(s, MethodFailure)]
        return failed + ([self.error] if self.error else [])

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pair_id": self.pair_id, "category": self.category}
        if self.shape is not None:
            out["shape"] = list(self.shape)
        if self.landmarks is not None:
            out["landmarks"] = self.landmarks
        out["methods"] = {m: s.to_dict() for m, s in self.methods.items()}
        if self.error is not None:
            out["error"] = self.error
            out["trace"] = self.trace
        out["cpu_seconds"] = self.cpu_seconds
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Case:
        return cls(
            pair_id=data["pair_id"],
            category=data["category"],
            methods={m: _score_from_dict(s) for m, s in data["methods"].items()},
            shape=(data["shape"][0], data["shape"][1]) if "shape" in data else None,
            landmarks=data.get("landmarks"),
            error=data.get("error"),
            trace=data.get("trace"),
            cpu_seconds=data.get("cpu_seconds", 0.0),
        )


@dataclass(frozen=True)
class DenseSummary:
    """One method over a group of dense pairs; the scores are None when no pair was scored."""

    pairs: int
    failed: int
    epe_mean: float | None = None
    epe_median: float | None = None
    pixels_under: dict[float, float] = field(default_factory=dict)  # share of all scored pixels under k px
    pairs_under: dict[float, float] = field(default_factory=dict)  # share of pairs whose median is under k px
    recovery_median: float | None = None
    recovery_mean: float | None = None
    folding: float | None = None
    seconds_per_mp: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pairs": self.pairs, "failed": self.failed}
        if self.epe_median is None:
            return out
        return {
            **out,
            "epe_mean": self.epe_mean,
            "epe_median": self.epe_median,
            **_under_keys("pixels_under", self.pixels_under),
            **_under_keys("pairs_under", self.pairs_under),
            "recovery_median": self.recovery_median,
            "recovery_mean": self.recovery_mean,
            "folding": self.folding,
            "seconds_per_mp": self.seconds_per_mp,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DenseSummary:
        return cls(
            pairs=data["pairs"],
            failed=data["failed"],
            epe_mean=data.get("epe_mean"),
            epe_median=data.get("epe_median"),
            pixels_under=_under_read("pixels_under", data),
            pairs_under=_under_read("pairs_under", data),
            recovery_median=data.get("recovery_median"),
            recovery_mean=data.get("recovery_mean"),
            folding=data.get("folding"),
            seconds_per_mp=data.get("seconds_per_mp"),
        )


@dataclass(frozen=True)
class LandmarkSummary:
    """One method over a group of landmark pairs; the scores are None when no pair was scored."""

    pairs: int
    failed: int
    median: float | None = None
    mean: float | None = None
    pairs_under: dict[float, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pairs": self.pairs, "failed": self.failed}
        if self.median is None:
            return out
        return {**out, "median": self.median, "mean": self.mean, **_under_keys("pairs_under", self.pairs_under)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LandmarkSummary:
        return cls(
            data["pairs"], data["failed"], data.get("median"), data.get("mean"), _under_read("pairs_under", data)
        )


# method -> group (a category, or "overall") -> summary
DenseTable = dict[str, dict[str, DenseSummary]]
LandmarkTable = dict[str, dict[str, LandmarkSummary]]


def _table_to_dict(table: DenseTable | LandmarkTable) -> dict[str, Any]:
    return {m: {g: s.to_dict() for g, s in groups.items()} for m, groups in table.items()}


@dataclass(frozen=True)
class Summary:
    """Per method, per category and overall: both tracks, and the dense track on the pairs with a usable
    ground truth (only the categories that had pairs set aside, plus overall; empty when none was)."""

    dense: DenseTable
    landmarks: LandmarkTable
    dense_usable: DenseTable

    def to_dict(self) -> dict[str, Any]:
        return {
            "dense": _table_to_dict(self.dense),
            "landmarks": _table_to_dict(self.landmarks),
            "dense_usable": _table_to_dict(self.dense_usable),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Summary:
        def dense(table: dict) -> DenseTable:
            return {m: {g: DenseSummary.from_dict(s) for g, s in gs.items()} for m, gs in table.items()}

        landmarks = {
            m: {g: LandmarkSummary.from_dict(s) for g, s in gs.items()} for m, gs in data.get("landmarks", {}).items()
        }
        return cls(dense(data.get("dense", {})), landmarks, dense(data.get("dense_usable", {})))


@dataclass(frozen=True)
class RunSettings:
    """The settings a result was produced with, as recorded in it."""

    pairs_dir: str
    split: str
    methods: tuple[str, ...]
    seed: int
    limit: int | None
    workers: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "pairs_dir": self.pairs_dir,
            "split": self.split,
            "methods": list(self.methods),
            "seed": self.seed,
            "limit": self.limit,
            "workers": self.workers,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunSettings:
        return cls(
            data["pairs_dir"], data["split"], tuple(data["methods"]), data["seed"], data["limit"], data["workers"]
        )


@dataclass(frozen=True)
class BenchResult:
    """A whole run: the pairs left out (data errors) and set aside (doubtful ground truth) with the reason,
    the settings, the time taken, every case by track, the summary, and the GPU speed recorded with the
    DS-MAR weights when dsmar ran (their sidecar's `gpu_throughput`)."""

    excluded: dict[str, str]
    set_aside: dict[str, str]
    config: RunSettings
    wall_seconds: float
    cpu_seconds: float
    cases: dict[str, list[Case]]  # track (TRACKS) -> cases, sorted by pair id
    summary: Summary
    gpu_speed: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "excluded": self.excluded,
            "set_aside": self.set_aside,
            "config": self.config.to_dict(),
            "wall_seconds": self.wall_seconds,
            "cpu_seconds": self.cpu_seconds,
            "cases": {track: [c.to_dict() for c in cases] for track, cases in self.cases.items()},
            "summary": self.summary.to_dict(),
            "gpu_speed": self.gpu_speed,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BenchResult:
        return cls(
            excluded=data.get("excluded", {}),
            set_aside=data.get("set_aside", {}),
            config=RunSettings.from_dict(data["config"]),
            wall_seconds=data["wall_seconds"],
            cpu_seconds=data.get("cpu_seconds", float("nan")),
            cases={track: [Case.from_dict(c) for c in cases] for track, cases in data["cases"].items()},
            summary=Summary.from_dict(data["summary"]),
            gpu_speed=data.get("gpu_speed"),
        )
