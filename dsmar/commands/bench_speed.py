"""`dsmar bench speed`: `dsmar run`'s flow, timed end to end on generated archives of growing size.

Per size: a synthetic optical/SAR/DEM archive (`datagen.speed_archive`, cached under OUT/archives by size and
generator version) served through the demo's local STAC API; per method and worker count: a fresh cube through
exactly the demo's code path (`archive_config` + `execute`, no report), timed by the flow itself
(`pipeline.timings`); the table is `benchmarks.speed`'s.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from kernel.errors import InputError

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "performance.md"
DEFAULT_SIZES = "1k,4k,full"
DEFAULT_WORKERS = "1,2"


def add_parser(sub) -> None:
    from kernel.contracts import DEFAULT_METHOD

    speed = sub.add_parser(
        "speed",
        help="time dsmar run end to end on generated archives of growing size (search, load, register, warp, write)",
    )
    speed.add_argument("--out", type=Path, required=True, help="folder for the archives (kept), cubes and results")
    speed.add_argument(
        "--sizes",
        default=DEFAULT_SIZES,
        help=f"archive sizes: 1k, 4k, full (10980 px) or pixels (default {DEFAULT_SIZES})",
    )
    speed.add_argument("--methods", default=DEFAULT_METHOD, help=f"comma-separated methods (default {DEFAULT_METHOD})")
    speed.add_argument(
        "--workers", default=DEFAULT_WORKERS, help=f"comma-separated local worker counts (default {DEFAULT_WORKERS})"
    )
    speed.add_argument(
        "--workers-for",
        metavar="SIZE=COUNTS",
        action="append",
        default=[],
        help="the worker counts of one size instead of --workers, e.g. full=2 (repeatable)",
    )
    speed.add_argument(
        "--memory-limit",
        metavar="SIZE",
        help="memory of each worker, e.g. 1500MiB, or per method, e.g. cfog=800MiB,dsmar=1GiB (a bare SIZE is the "
        "default of the others): Dask spills the data waiting for later tasks to disk above it",
    )
    speed.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs OUT/speed.json already holds from this code (dsmar version and commit) and measure only the others",
    )
    speed.add_argument("--seed", type=int, default=0, help="seed of the generated landscape")
    speed.add_argument("--keep-cubes", action="store_true", help="keep the cubes under OUT/cubes (large for full)")
    speed.add_argument("--label", default="", help="a line under the table's heading: the machine, its load")
    speed.add_argument("--update-docs", action="store_true", help="write the table into docs/performance.md")
    speed.set_defaults(func=_speed)


def measuring_version() -> str:
    """dsmar's version and, where it runs from a git checkout, the commit ("+<sha>", "-dirty" with uncommitted
    changes to tracked files): a resumed bench keeps only the runs of the same code."""
    from kernel.version import __version__

    root = str(Path(__file__).resolve().parents[2])
    try:
        sha = _git(root, "rev-parse", "--short=12", "HEAD")
        dirty = _git(root, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return __version__
    return f"{__version__}+{sha}{'-dirty' if dirty else ''}"


def _git(root: str, *args: str) -> str:
    return subprocess.run(["git", "-C", root, *args], capture_output=True, text=True, check=True).stdout.strip()


def _counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise InputError(f"--workers takes comma-separated counts, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise InputError(f"--workers takes counts of at least 1, got {text!r}")
    return counts


def _workers_for(entries: list[str], sizes: list[str]) -> dict[str, tuple[int, ...]]:
    """`--workers-for SIZE=COUNTS` entries as {size: counts}; each size must be one of `sizes`."""
    chosen = {}
    for entry in entries:
        size, sep, counts = entry.partition("=")
        if not sep or size.strip() not in sizes:
            raise InputError(f"--workers-for takes SIZE=COUNTS with SIZE one of {','.join(sizes)}, got {entry!r}")
        chosen[size.strip()] = _counts(counts)
    return chosen


def _memory_limits(text: str | None, methods: list[str]) -> dict[str, str | None]:
    """`--memory-limit` as {method name: budget}, "" holding the default of the methods not named; each budget
    checked by `ClusterConfig` (one line if malformed)."""
    from kernel.config import ClusterConfig, build

    names = {method.split(":", 1)[0] for method in methods}
    limits: dict[str, str | None] = {"": None}
    for entry in (text or "").split(","):
        name, sep, size = entry.strip().rpartition("=")
        if not size:
            continue
        if sep and name not in names:
            raise InputError(
                f"--memory-limit names {name!r}, which is not one of --methods ({', '.join(sorted(names))})"
            )
        limits[name] = build(ClusterConfig, memory_limit=size).memory_limit
    return limits


def _earlier_runs(path: Path) -> list:
    """The runs a results file holds (none where it does not exist)."""
    from benchmarks.speed import SpeedRun

    if not path.exists():
        return []
    try:
        return [SpeedRun.from_json(r) for r in json.loads(path.read_text())]
    except (ValueError, TypeError, KeyError) as error:
        raise InputError(f"--resume: {path} is not a speed benchmark's results file ({error})") from None


def _bytes_under(path: Path, pattern: str = "*") -> int:
    return sum(p.stat().st_size for p in path.rglob(pattern) if p.is_file())


def _speed(args) -> int:
    from datetime import UTC, datetime

    from benchmarks.speed import SpeedRun, plan_runs, table, update_docs, write_results
    from catalogs.server import serve_static_catalog
    from datagen.speed_archive import generate_speed_archive, size_of
    from dsmar.commands.common_options import split_methods
    from dsmar.commands.demo import archive_config
    from dsmar.commands.run import execute
    from flows.environment import apply_defaults
    from kernel.config import ClusterConfig, TileConfig, build
    from models.api import method_spec
    from pipeline.cube import open_cube

    apply_defaults()
    sizes = [(name.strip(), size_of(name.strip())) for name in args.sizes.split(",") if name.strip()]
    methods = [method_spec(spec).text for spec in split_methods(args.methods)]
    names = [name for name, _ in sizes]
    planned = plan_runs(
        names,
        methods,
        _counts(args.workers),
        _workers_for(args.workers_for, names),
        _memory_limits(args.memory_limit, methods),
    )
    out = Path(args.out).resolve()
    version = measuring_version()
    earlier = _earlier_runs(out / "speed.json") if args.resume else []
    runs: list[SpeedRun] = []

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    for name, size in sizes:
        todo = []
        for plan in (p for p in planned if p.size == name):
            kept = [r for r in earlier if plan.done_by(r, version)]
            if kept:
                say(f"speed: {name}, {plan.method}, {plan.workers} worker(s): kept from {kept[-1].measured}")
                runs.append(kept[-1])
            else:
                todo.append(plan)
        if not todo:
            continue
        say(f"speed: archive {name} ({size} px a side) under {out / 'archives' / name}")
        archive = generate_speed_archive(out / "archives" / name, size, args.seed)
        input_bytes = _bytes_under(archive.root, "*.tif")
        with serve_static_catalog(archive.catalog) as server:
            for plan in todo:
                method, count = plan.method, plan.workers
                cube = out / "cubes" / f"{name}-{method.replace(':', '_')}-w{count}.zarr"
                if cube.exists():
                    shutil.rmtree(cube)
                config = archive_config(
                    archive,
                    server.url,
                    cube,
                    method,
                    build(TileConfig),
                    build(ClusterConfig, workers=count, memory_limit=plan.memory_limit),
                    None,
                )
                say(f"speed: {name}, {method}, {count} worker(s)")
                summary = execute(config)
                with open_cube(str(cube)) as ds:
                    shape = (ds.sizes["y"], ds.sizes["x"])
                run = SpeedRun(
                    size=name,
                    method=method,
                    workers=count,
                    threads=summary.threads,
                    cube_shape=shape,
                    tiles=summary.tiles_written,
                    wall_seconds=summary.wall_seconds,
                    stages=summary.stages,
                    worker_seconds=summary.worker_seconds,
                    peak_rss=summary.worker_peak_rss,
                    worker_cpu=summary.worker_cpu,
                    client_cpu=summary.client_cpu,
                    workers_restarted=summary.workers_restarted,
                    cube_bytes=_bytes_under(cube),
                    input_bytes=input_bytes,
                    memory_limit=plan.memory_limit,
                    version=version,
                    measured=datetime.now(UTC).isoformat(timespec="seconds"),
                )
                runs.append(run)
                write_results(runs, out / "speed.json")
                say(" ".join(line for line in table([run]).splitlines() if line.startswith(f"| {name} ")))
                if not args.keep_cubes:
                    shutil.rmtree(cube)
    print(table(runs))
    if args.update_docs:
        command = "dsmar bench speed " + " ".join(
            shlex.quote(a)
            for a in [
                "--sizes",
                args.sizes,
                "--methods",
                ",".join(methods),
                "--workers",
                args.workers,
                *(a for entry in args.workers_for for a in ("--workers-for", entry)),
                "--out",
                "bench-speed",
            ]
            + (["--memory-limit", args.memory_limit] if args.memory_limit else [])
            + (["--seed", str(args.seed)] if args.seed else [])
            + ["--update-docs"]
        )
        update_docs(DOCS, runs, args.label, command)
        print(f"docs: {DOCS}")
    return 0
