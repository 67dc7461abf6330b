"""On a GPU host: build a small demo archive, run it through `dsmar run` on dsmar's own LocalCUDACluster (one
worker per GPU), and write the throughput and which steps ran on the CPU into $OUT (gpu_cluster_check.json,
run.log). Started by scripts/gpu_cluster_check.sh; without a GPU or dask-cuda it stops in one line.

    OUT=/tmp/out scripts/gpu_cluster_check.sh [SIZE [METHOD]]    # default 1024 px, the default method
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from kernel.contracts import DEFAULT_METHOD
from models.api import method_spec
from pipeline.cluster import count_gpus, dask_cuda_importable

ALWAYS_ON_CPU = (
    "search and input reads/reprojection (GDAL)",
    "blend and warp of each chunk (numpy)",
    "Zarr chunk writes",
)


def cpu_steps(method: str) -> list[str]:
    """The steps of a run that do not use the GPU, for this method spec's effective settings."""
    spec = method_spec(method)
    settings = dict(spec.settings)
    steps = list(ALWAYS_ON_CPU)
    if spec.name != "dsmar":
        return [*steps, f"the whole registration ({spec.name} is a classical numpy method)"]
    polish = settings.get("polish", 0)
    if (polish if isinstance(polish, int) else any(polish)) or settings.get("trend", "field") != "field":
        steps.append(f"window search of polish={polish} trend={settings.get('trend')} (MIND-SSC, numpy)")
    return steps


def fail(message: str) -> int:
    print(f"gpu_cluster_check: {message}", file=sys.stderr)
    return 2


def main(argv: list[str]) -> int:
    if not os.environ.get("OUT"):
        return fail("set OUT to the folder for the results")
    out = Path(os.environ["OUT"])
    size = int(argv[0]) if argv else 1024
    method = argv[1] if len(argv) > 1 else DEFAULT_METHOD
    gpus = count_gpus()
    if not gpus:
        return fail("no GPU visible (NVML lists none, or CUDA_VISIBLE_DEVICES hides them): run it on a GPU host")
    if not dask_cuda_importable():
        return fail("dask-cuda does not import here: pip install -e '.[gpu]'")
    from catalogs.server import serve_static_catalog
    from datagen.demo_archive import generate_archive
    from pipeline.cube import open_cube

    out.mkdir(parents=True, exist_ok=True)
    info = generate_archive(out / "archive", size=size, dates=2, seed=0)
    cube = out / "cube.zarr"
    with serve_static_catalog(info.catalog) as server:
        area = ["--bbox", *map(str, info.bbox), "--start", str(info.start), "--end", str(info.end)]
        run = [sys.executable, "-m", "dsmar.cli", "run", "--profile", "local", "--catalog", server.url, *area]
        started = time.perf_counter()
        done = subprocess.run([*run, "--out", str(cube), "--method", method], capture_output=True, text=True)
        wall = time.perf_counter() - started
    log = done.stdout + done.stderr
    (out / "run.log").write_text(log)
    if done.returncode != 0:
        return fail(f"dsmar run exited {done.returncode}; see {out / 'run.log'}")
    workers = re.search(r"Dask: (\d+) GPU worker\(s\), (\d+) thread", log)
    if workers is None:
        return fail(f"dsmar run did not start a LocalCUDACluster; see {out / 'run.log'}")
    ds = open_cube(str(cube))
    megapixels = ds.sizes["time"] * ds.sizes["y"] * ds.sizes["x"] / 1e6
    result = {
        "gpus": gpus,
        "gpu_workers": int(workers.group(1)),
        "threads_per_worker": int(workers.group(2)),
        "method": method_spec(method).text,
        "archive_px": size,
        "optical_megapixels": round(megapixels, 3),
        "wall_s": round(wall, 1),
        "megapixels_per_s": round(megapixels / wall, 4),
        "steps_on_cpu": cpu_steps(method),
        "summary": [line for line in done.stdout.splitlines() if line.strip()],
    }
    (out / "gpu_cluster_check.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
