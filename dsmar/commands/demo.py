"""`dsmar demo`: the whole production flow on a generated archive, offline, with a scored result.

Generate a synthetic archive with known misregistration, serve its STAC items through a real local
STAC API, then run exactly `dsmar run`'s code path (the `local` profile) into DIR/cube.zarr with a
report in DIR/report/, and print how far the recovered fields are from the injected truth.
A later demo in the same DIR keeps or replaces only what a demo wrote there (`prepare_workdir`).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from pathlib import Path

from dsmar.commands.run import add_tile_arguments, execute, print_summary
from kernel.config import ClusterConfig, RunConfig, SearchConfig, TileConfig, build
from kernel.contracts import DEFAULT_METHOD
from kernel.errors import InputError
from kernel.paths import check_writable_dir
from models.api import method_spec

DEFAULT_SIZE = 1536  # optical pixels per side: 3 x 3 tiles of 512, a few minutes on 2 cores


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the full flow offline on a generated archive and score it against the injected truth",
        description="Generate a synthetic optical/SAR/DEM archive with known misregistration, serve it "
        "through a local STAC API, run the production flow on a local Dask cluster, and write "
        "DIR/cube.zarr and DIR/report/.",
    )
    parser.add_argument("--workdir", default="demo-output", metavar="DIR", help="output folder (default ./demo-output)")
    parser.add_argument(
        "--size",
        type=int,
        default=DEFAULT_SIZE,
        metavar="N",
        help=f"optical pixels per side of the generated scenes (default {DEFAULT_SIZE}); the cube "
        "covers their inner part, 4%% smaller per side (512 -> 492 px)",
    )
    parser.add_argument("--dates", type=int, default=2, metavar="N", help="optical acquisitions (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the synthetic landscape")
    parser.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        metavar="SPEC",
        help=f"registration method, optionally with options: dsmar:augment=1 (default {DEFAULT_METHOD})",
    )
    add_tile_arguments(parser)
    parser.add_argument("--workers", type=int, metavar="N", help="local Dask workers (default: one per core)")
    parser.set_defaults(func=_run)


def run_demo(
    workdir: Path,
    size: int = DEFAULT_SIZE,
    dates: int = 2,
    seed: int = 0,
    method: str = DEFAULT_METHOD,
    tile_size: int | None = None,
    halo: int | None = None,
    workers: int | None = None,
):
    """Archive -> local STAC API -> `dsmar run`'s flow -> cube + report; returns the run summary.
    Tile size and halo left None take `TileConfig`'s defaults."""
    from catalogs.server import serve_static_catalog
    from datagen.demo_archive import generate_archive

    workdir = check_writable_dir(Path(workdir), "workdir")
    spec = method_spec(method)
    tiles = build(TileConfig, size=tile_size, halo=halo)
    cluster = build(ClusterConfig, workers=workers)
    params = {
        "size": size,
        "dates": dates,
        "seed": seed,
        "tile_size": tiles.size,
        "halo": tiles.halo,
        "method": spec.text,
        # what fixes the method's output besides its name (weights, settings): a cube holds one, so an
        # upgrade that changes them starts the demo's cube afresh
        "method_build": spec.fingerprint[:12],
    }
    notice = prepare_workdir(workdir, params)
    if notice:
        print(notice, file=sys.stderr)
    archive = generate_archive(workdir / "archive", size=size, dates=dates, seed=seed)
    cube, report = workdir / "cube.zarr", workdir / "report"
    with serve_static_catalog(archive.catalog) as server:
        return execute(archive_config(archive, server.url, cube, spec.text, tiles, cluster, report))


def archive_config(
    archive, catalog_url: str, cube: Path, method: str, tiles: TileConfig, cluster: ClusterConfig, report: Path | None
) -> RunConfig:
    """The `RunConfig` `dsmar run` builds for a generated archive (`datagen.demo_archive.ArchiveInfo`) served at
    `catalog_url`: the `local` profile, the archive's AOI and dates."""
    return build(
        RunConfig,
        bbox=archive.bbox,
        start=archive.start,
        end=archive.end,
        out=str(cube),
        method=method,
        search=build(SearchConfig, profile="local", catalog_url=catalog_url),
        tiles=tiles,
        cluster=cluster,
        report_dir=None if report is None else str(report),
    )


STAMP = "demo-params.json"
# Keys of every stamp the demo has written (the method joined them later): a file with these is the demo's.
STAMP_KEYS = {"size", "dates", "seed", "tile_size", "halo"}
OPTIONS = {
    "size": "--size",
    "dates": "--dates",
    "seed": "--seed",
    "tile_size": "--tile-size",
    "halo": "--halo",
    "method": "--method",
    "method_build": "the method's weights/settings",
}
REPORT_FILE = re.compile(r"report\.(md|json)|.+_(checkerboard|crops|field|confidence|error)\.png")


def prepare_workdir(workdir: Path, params: dict) -> str | None:
    """Keep DIR/cube.zarr and DIR/report across demos with the same options (a re-run then skips every
    chunk already written: fast and idempotent); after a change of options (the grid, the chunks, or the
    method: a cube holds one) delete them and return a line saying so. Only what the demo itself wrote
    is deleted or overwritten: anything else in the way stops the demo with an InputError naming it."""
    stamp = workdir / STAMP
    previous = _read_stamp(stamp)
    if previous == params:
        return None
    present = [workdir / name for name in ("cube.zarr", "report", "archive") if _occupied(workdir / name)]
    for path in present:
        reason = _not_the_demos(path, previous)
        if reason:
            raise InputError(f"{path} is in the way: {reason}; move it away or choose another --workdir")
    doomed = [path for path in present if path.name != "archive"]  # the archive rebuilds itself when needed
    for path in doomed:
        shutil.rmtree(path)
    stamp.write_text(json.dumps(params, sort_keys=True))
    if not doomed:
        return None
    keys = [key for key in params if previous.get(key) != params[key]]
    if "method" in keys:  # another method has another build: saying so adds nothing
        keys = [key for key in keys if key != "method_build"]
    changed = ", ".join(f"{OPTIONS[key]} {previous.get(key, 'unset')} -> {params[key]}" for key in keys)
    return (
        f"demo: options changed since the last demo in {workdir} ({changed}); starting "
        f"{' and '.join(path.name for path in doomed)} afresh"
    )


def _occupied(path: Path) -> bool:
    return path.exists() and not (path.is_dir() and not any(path.iterdir()))


def _not_the_demos(path: Path, stamp: dict | None) -> str | None:
    """Why `path` (DIR/cube.zarr, report or archive) may not be the demo's own output; None when it is.

    The archive proves itself with its manifest; a cube or report counts only next to the demo's stamp
    (a cube `dsmar run` wrote there has the same attrs, and may be the user's)."""
    if path.name == "archive":
        return None if _is_demo_archive(path) else "it is not an archive the demo generated"
    if stamp is None:
        return f"no {STAMP} says an earlier demo wrote it"
    if path.name == "cube.zarr":
        from pipeline.cube import is_dsmar_cube

        return None if is_dsmar_cube(str(path)) else "it is not a dsmar cube"
    if not path.is_dir():
        return "it is not a folder"
    foreign = sorted(
        child.name for child in path.iterdir() if not (child.is_file() and REPORT_FILE.fullmatch(child.name))
    )
    return f"it holds files the demo did not write ({', '.join(foreign[:3])})" if foreign else None


def _read_stamp(path: Path) -> dict | None:
    """The options of the demo that last wrote DIR, or None when DIR holds no stamp the demo wrote."""
    try:
        stamp = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return stamp if isinstance(stamp, dict) and STAMP_KEYS <= stamp.keys() else None


def _is_demo_archive(path: Path) -> bool:
    from datagen.demo_archive import GENERATOR

    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("parameters", {}).get("generator") == GENERATOR


def _run(args) -> int:
    from flows.environment import apply_defaults

    apply_defaults()
    started = time.perf_counter()
    summary = run_demo(
        Path(args.workdir), args.size, args.dates, args.seed, args.method, args.tile_size, args.halo, args.workers
    )
    print_summary(summary)
    print(f"Demo total (archive + server + flow): {time.perf_counter() - started:.1f} s")
    return 0
