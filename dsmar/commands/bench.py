"""`dsmar bench accuracy`: the accuracy benchmark on real multimodal pairs (benchmarks/); `dsmar bench speed`
is in bench_speed.py."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from dsmar.commands import bench_speed
from dsmar.commands.common_options import split_methods
from kernel.errors import InputError

REPO = Path(__file__).resolve().parents[2]
DEFAULT_PAIRS = REPO.parent / "shared" / "data" / "pairs"
DEFAULT_METHODS = "identity,phase,cfog,mind,dsmar"
DOCS = REPO / "docs" / "accuracy.md"
TUNING_NOTES = REPO / "benchmarks" / "tuning.md"


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="measure registration methods on real pairs, or the flow's speed")
    sub = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    acc = sub.add_parser("accuracy", help="dense-track, warp-recovery and landmark scores of methods on real pairs")
    acc.add_argument(
        "--pairs", type=Path, default=None, help=f"folder with pairs.csv (default {DEFAULT_PAIRS} when present)"
    )
    acc.add_argument("--split", default="eval", choices=("train", "eval"))
    acc.add_argument(
        "--methods",
        default=DEFAULT_METHODS,
        help="comma-separated register_pair methods, each optionally with options: dsmar:augment=4:polish=[5,3]",
    )
    acc.add_argument("--out", type=Path, required=True, help="folder for results.json, report.md, figures")
    acc.add_argument("--limit", type=int, default=None, help="evenly spaced subset of N pairs")
    acc.add_argument("--seed", type=int, default=0, help="seed of the known warps")
    acc.add_argument("--workers", type=int, default=2, help="processes (one pair each)")
    acc.add_argument("--no-landmarks", action="store_true", help="skip the landmark track")
    acc.add_argument(
        "--update-docs", action="store_true", help="regenerate docs/accuracy.md from this run (eval split, full run)"
    )
    acc.set_defaults(func=_accuracy)
    bench_speed.add_parser(sub)


def _accuracy(args) -> int:
    from benchmarks.accuracy import BenchConfig, check_spec, run_benchmark
    from benchmarks.report import tables, write_docs, write_report
    from models.api import method_spec

    pairs = args.pairs if args.pairs is not None else DEFAULT_PAIRS
    if not (pairs / "pairs.csv").exists():
        raise InputError(f"no pairs.csv in {pairs}: give --pairs the folder of the real pairs")
    methods = split_methods(args.methods)
    for spec in methods:  # every spec is checked before any runs
        method_spec(spec)
    for spec in methods:
        check_spec(spec)
    if args.limit is not None and args.limit < 1:
        raise InputError("--limit must be at least 1")
    config = BenchConfig(
        pairs_dir=pairs.resolve(),
        split=args.split,
        methods=methods,
        seed=args.seed,
        limit=args.limit,
        workers=max(1, args.workers),
        landmarks=not args.no_landmarks,
    )
    result = run_benchmark(config, progress=lambda line: print(line, file=sys.stderr, flush=True))
    report = write_report(result, args.out)
    print(tables(result))
    print(
        f"\n{result.wall_seconds:.0f} s wall, {result.cpu_seconds:.0f} s CPU; "
        f"report: {report}; results: {args.out / 'results.json'}"
    )
    if args.update_docs:
        command = "dsmar bench accuracy " + " ".join(
            shlex.quote(a)
            for a in [
                "--split",
                args.split,
                "--methods",
                ",".join(methods),
                "--seed",
                str(args.seed),
                "--workers",
                str(config.workers),
                "--out",
                "bench-out",
                "--update-docs",
            ]
            + (["--limit", str(args.limit)] if args.limit else [])
        )
        notes = TUNING_NOTES.read_text() if TUNING_NOTES.exists() else ""
        write_docs(result, DOCS, command, notes)
        print(f"docs: {DOCS}")
    return 0
