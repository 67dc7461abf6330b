"""The accuracy benchmark: every method through `register_pair`, on real pairs, scored three ways.

- dense track: the aligned pair (ground truth undone, cropped to its valid area), the moving image
  deformed by a seeded smooth warp w; the method's field on (fixed, warped moving) is scored against
  the exact inverse of w (end-point error, folding) and, independent of the ground truth's own error,
  by warp recovery |d1(p) + w(p + d1(p)) - d0(p)| with d0 the method's field on the unwarped pair;
- landmark track: pairs with manual landmarks, moving padded/cropped to the fixed shape without the
  ground truth, the field scored at the fixed landmarks against the moving ones.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import traceback
import zlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import numpy as np

from benchmarks.metrics import THRESHOLDS, landmark_errors, summarise_errors, warp_recovery_error
from benchmarks.results import (
    TRACKS,
    BenchResult,
    Case,
    DenseScore,
    DenseSummary,
    LandmarkScore,
    LandmarkSummary,
    MethodFailure,
    MethodScore,
    RunSettings,
    Summary,
)
from datagen.pairs import (
    PairRecord,
    doubtful_ground_truth,
    load_aligned_pair,
    read_ground_truth,
    read_image,
    read_pairs,
)
from datagen.warps import benchmark_warp, inside_mask, invert_warp
from kernel.errors import InputError
from kernel.field_metrics import end_point_error, folding_share
from kernel.warp import warp_image
from models import method_spec, register_pair
from pipeline.progress import eta, two_significant

S = TypeVar("S", DenseSummary, LandmarkSummary)

HIST_EDGES = np.concatenate([np.arange(0.0, 20.0, 0.05), np.arange(20.0, 200.0, 1.0), [np.inf]])


@dataclass(frozen=True)
class BenchConfig:
    pairs_dir: Path
    split: str = "eval"
    methods: tuple[str, ...] = ("identity", "phase", "cfog", "mind")
    seed: int = 0
    limit: int | None = None
    workers: int = 2
    landmarks: bool = True


def pair_seed(seed: int, pair_id: str) -> int:
    """A warp seed that depends only on the run seed and the pair, not on order or --limit."""
    return (seed * 1_000_003 + zlib.crc32(pair_id.encode())) % (2**32)


def data_errors(records: Sequence[PairRecord]) -> dict[str, str]:
    """Pairs that cannot be scored because of an error in the data itself, with the reason."""
    return {
        r.pair_id: "fixed and moving are the same file, but the ground truth is not the identity"
        for r in records
        if r.fixed_path.resolve() == r.moving_path.resolve()
    }


def set_aside(records: Sequence[PairRecord]) -> dict[str, str]:
    """Pairs that are scored but whose ground truth is known not to align them, with the reason.

    Their scores stay in the per-category and overall tables; the usable-ground-truth summary leaves them out.
    """
    return {r.pair_id: reason for r in records if (reason := doubtful_ground_truth(r)) is not None}


def select_pairs(config: BenchConfig) -> list[PairRecord]:
    """The split's pairs (an even spread of `limit` of them), without pairs whose data is in error."""
    records = read_pairs(config.pairs_dir, config.split)
    broken = data_errors(records)
    records = [r for r in records if r.pair_id not in broken]
    if config.limit is not None and config.limit < len(records):
        # An even spread over the table keeps every category in a limited run.
        picks = np.linspace(0, len(records) - 1, config.limit).round().astype(int)
        records = [records[i] for i in sorted(set(picks))]
    return records


def check_spec(spec: str) -> None:
    """Run a method spec once on a small random pair, so a bad spec or a failing method fails before a long
    run (InputError)."""
    rng = np.random.default_rng(0)
    fixed, moving = rng.random((2, 1, 64, 64), dtype=np.float32)
    try:
        register_spec(spec, fixed, moving, "optical", "sar")
    except InputError:
        raise
    except Exception as err:  # any other failure is the spec's fault as far as the user sees
        raise InputError(f"method {spec!r} fails on a 64 x 64 test pair: {type(err).__name__}: {err}") from err


def register_spec(spec: str, fixed, moving, fixed_modality: str, moving_modality: str):
    """`register_pair` with the method and options of a method spec (`dsmar,dsmar:augment=4` compares a
    method's options in one run, each labelled by its spec)."""
    return register_pair(fixed, moving, fixed_modality, moving_modality, method=method_spec(spec))


def _timed(spec: str, fixed, moving, fixed_modality, moving_modality):
    start = time.perf_counter()
    result = register_spec(spec, fixed, moving, fixed_modality, moving_modality)
    return result.displacement, time.perf_counter() - start


def dense_case(record: PairRecord, methods: Sequence[str], seed: int) -> Case:
    """Scores of every method on one pair's dense track (a failure is recorded, not raised)."""
    pair = load_aligned_pair(record)
    full = pair.fixed.shape[-2:]
    warp = benchmark_warp(full, pair_seed(seed, record.pair_id))
    # Score on an inner crop where the warped moving image is valid everywhere: a NaN border would
    # spell out the warp to any method that looks at validity, and hand it the answer.
    m = max(0, min(int(np.ceil(np.abs(warp).max())) + 2, (min(full) - 64) // 2))
    crop = (slice(None), slice(m, full[0] - m), slice(m, full[1] - m))
    warped = warp_image(pair.moving, warp)[crop]
    fixed, moving, warp = pair.fixed[crop], pair.moving[crop], warp[crop]
    shape = fixed.shape[-2:]
    truth = invert_warp(warp)
    inside = inside_mask(truth)
    megapixels = shape[0] * shape[1] / 1e6
    scores: dict[str, MethodScore] = {}
    for method in methods:
        try:
            d1, t1 = _timed(method, fixed, warped, pair.fixed_modality, pair.moving_modality)
            d0, t0 = _timed(method, fixed, moving, pair.fixed_modality, pair.moving_modality)
        except Exception as err:  # a method's failure is a result to report
            scores[method] = MethodFailure(f"{type(err).__name__}: {err}")
            continue
        epe = end_point_error(d1, truth)[inside]
        recovery = warp_recovery_error(d1, warp, d0)[inside]
        scores[method] = DenseScore(
            epe=summarise_errors(epe),
            epe_hist=np.histogram(epe, HIST_EDGES)[0].tolist(),
            recovery=summarise_errors(recovery),
            folding=folding_share(d1, inside),
            seconds=t0 + t1,
            megapixels=2 * megapixels,
        )
    return Case(record.pair_id, record.category, scores, shape=(int(shape[0]), int(shape[1])))


def fit_to_shape(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Crop or NaN-pad (C, H, W) at the bottom/right to `shape`: same size, no use of the ground truth."""
    out = np.full((image.shape[0], *shape), np.nan, np.float32)
    h, w = min(shape[0], image.shape[1]), min(shape[1], image.shape[2])
    out[:, :h, :w] = image[:, :h, :w]
    return out


def landmark_case(record: PairRecord, methods: Sequence[str]) -> Case:
    """Scores of every method at the manual landmarks of the original (unaligned) pair."""
    marks = read_ground_truth(record).landmarks
    fixed = read_image(record.fixed_path)
    moving = fit_to_shape(read_image(record.moving_path), fixed.shape[-2:])
    scores: dict[str, MethodScore] = {}
    for method in methods:
        try:
            field, seconds = _timed(method, fixed, moving, record.fixed_modality, record.moving_modality)
        except Exception as err:  # a method's failure is a result to report
            scores[method] = MethodFailure(f"{type(err).__name__}: {err}")
            continue
        scores[method] = LandmarkScore(summarise_errors(landmark_errors(field, marks)), seconds)
    return Case(record.pair_id, record.category, scores, landmarks=len(marks))


def _run_case(kind: str, record: PairRecord, methods: tuple[str, ...], seed: int) -> Case:
    cpu = time.process_time()
    try:
        case = dense_case(record, methods, seed) if kind == "dense" else landmark_case(record, methods)
    except Exception as err:  # an unreadable pair is reported, the run goes on
        case = Case(
            record.pair_id,
            record.category,
            {},
            error=f"{type(err).__name__}: {err}",
            trace=traceback.format_exc(limit=3),
        )
    return replace(case, cpu_seconds=time.process_time() - cpu)


def _init_worker() -> None:
    # A worker would catch Ctrl-C or the CLI's SIGTERM exception as a pair's result and go on with the next
    # pair: the main process alone reacts to them, and its terminate() ends a worker for good.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # Each worker is one process on one core: keep numeric libraries from oversubscribing it.
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def progress_line(done: int, total: int, what: str, elapsed: float) -> str:
    """`[12/190] dense srif-map-001, 3.1 pairs/min, ETA 54 min`: the mean rate since the start."""
    if done <= 0 or elapsed <= 0:
        return f"[{done}/{total}] {what}"
    return f"[{done}/{total}] {what}, {two_significant(60 * done / elapsed)} pairs/min, {eta(done / total, elapsed)}"


def run_benchmark(config: BenchConfig, progress: Callable[[str], None] = lambda _: None) -> BenchResult:
    """Run both tracks over the selected pairs (a process pool over pairs) and return raw results."""
    records = select_pairs(config)
    jobs = [("dense", r) for r in records]
    if config.landmarks:
        jobs += [("landmarks", r) for r in records if read_ground_truth(r).landmarks is not None]
    results: dict[str, list[Case]] = {track: [] for track in TRACKS}
    start = time.perf_counter()
    if config.workers <= 1:
        done = ((kind, _run_case(kind, r, config.methods, config.seed)) for kind, r in jobs)
        for i, (kind, case) in enumerate(done, 1):
            results[kind].append(case)
            progress(progress_line(i, len(jobs), f"{kind} {case.pair_id}", time.perf_counter() - start))
    else:
        pool = ProcessPoolExecutor(config.workers, initializer=_init_worker)
        try:
            futures = {pool.submit(_run_case, kind, r, config.methods, config.seed): kind for kind, r in jobs}
            for i, future in enumerate(as_completed(futures), 1):
                case = future.result()
                results[futures[future]].append(case)
                progress(progress_line(i, len(jobs), f"{futures[future]} {case.pair_id}", time.perf_counter() - start))
        except BaseException:
            # Ctrl-C, SIGTERM or a failure: the queued pairs are dropped and the workers stopped now,
            # not after every remaining pair has run (a plain `with` waits for all of them).
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in multiprocessing.active_children():
                worker.terminate()
            raise
        pool.shutdown()
    for cases in results.values():
        cases.sort(key=lambda c: c.pair_id)
    aside = set_aside(records)
    return BenchResult(
        excluded=data_errors(read_pairs(config.pairs_dir, config.split)),
        set_aside=aside,
        config=RunSettings(
            str(config.pairs_dir), config.split, tuple(config.methods), config.seed, config.limit, config.workers
        ),
        wall_seconds=time.perf_counter() - start,
        # CPU time of the workers: wall time on an otherwise idle machine is about this / workers.
        cpu_seconds=sum(c.cpu_seconds for cases in results.values() for c in cases),
        cases=results,
        summary=summarise(results, config.methods, aside),
        gpu_speed=dsmar_gpu_speed() if "dsmar" in config.methods else None,
    )


def dsmar_gpu_speed() -> dict | None:
    """The GPU inference speed recorded with the DS-MAR weights in use (measured where a GPU was lent)."""
    from models.methods.dsmar import weights_metadata

    meta = weights_metadata()
    speed = meta.get("gpu_throughput")
    return speed if speed and speed.get("weights_sha256") == meta["sha256"] else None


def _dense_summary(cases: list[Case], method: str) -> DenseSummary:
    scored = [s for c in cases if (s := c.dense(method)) is not None]
    failed = len(cases) - len(scored)
    if not scored:
        return DenseSummary(len(cases), failed)
    medians = np.array([s.epe.median for s in scored])
    hist = np.sum([s.epe_hist for s in scored], axis=0)
    cum = np.cumsum(hist) / max(hist.sum(), 1)
    return DenseSummary(
        pairs=len(cases),
        failed=failed,
        epe_mean=float(np.mean([s.epe.mean for s in scored])),
        epe_median=float(np.median(medians)),
        pixels_under={t: float(cum[np.searchsorted(HIST_EDGES, t) - 1]) for t in THRESHOLDS},
        # A failed pair counts as not under any threshold.
        pairs_under={t: float((medians < t).sum() / len(cases)) for t in THRESHOLDS},
        recovery_median=float(np.median([s.recovery.median for s in scored])),
        recovery_mean=float(np.mean([s.recovery.mean for s in scored])),
        folding=float(np.mean([s.folding for s in scored])),
        seconds_per_mp=float(sum(s.seconds for s in scored) / sum(s.megapixels for s in scored)),
    )


def _landmark_summary(cases: list[Case], method: str) -> LandmarkSummary:
    scored = [s for c in cases if (s := c.landmark(method)) is not None]
    if not scored:
        return LandmarkSummary(len(cases), len(cases))
    medians = np.array([s.errors.median for s in scored])
    return LandmarkSummary(
        pairs=len(cases),
        failed=len(cases) - len(scored),
        median=float(np.nanmedian(medians)),
        mean=float(np.nanmean([s.errors.mean for s in scored])),
        pairs_under={t: float((medians < t).sum() / len(cases)) for t in THRESHOLDS},
    )


def _per_category(
    cases: list[Case], methods: Sequence[str], reduce: Callable[[list[Case], str], S], categories: Sequence[str]
) -> dict[str, dict[str, S]]:
    """Per method: `reduce` over each of `categories` and over all `cases` ("overall")."""
    return {
        method: {
            **{cat: reduce([c for c in cases if c.category == cat], method) for cat in categories},
            "overall": reduce(cases, method),
        }
        for method in methods
    }


def summarise(
    results: Mapping[str, list[Case]], methods: Sequence[str], aside: Mapping[str, str] | None = None
) -> Summary:
    """Per method, per category and overall, for both tracks; and the dense track without the pairs in
    `aside` (ground truth known not to align them), overall and for each category they came from (empty
    when none of the dense pairs is set aside)."""

    def table(cases: list[Case], reduce: Callable[[list[Case], str], S]) -> dict[str, dict[str, S]]:
        return _per_category(cases, methods, reduce, sorted({c.category for c in cases})) if cases else {}

    dense = results.get("dense", [])
    aside = aside or {}
    touched = sorted({c.category for c in dense if c.pair_id in aside})
    usable = [c for c in dense if c.pair_id not in aside]
    return Summary(
        dense=table(dense, _dense_summary),
        landmarks=table(results.get("landmarks", []), _landmark_summary),
        dense_usable=_per_category(usable, methods, _dense_summary, touched) if touched else {},
    )
