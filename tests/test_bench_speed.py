"""`dsmar bench speed`: the speed archive is written window by window (memory flat in scene size), and the
benchmark runs `dsmar run`'s flow end to end on a small archive, with a table whose wall-time split adds up."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import rasterio

from benchmarks.speed import COLUMNS, MARK_END, MARK_START, SpeedRun, peak_cell, plan_runs, table, update_docs
from datagen.speed_archive import generate_speed_archive, size_of
from dsmar.cli import main
from kernel.errors import InputError


def _peak_bytes(root, size: int) -> int:
    tracemalloc.start()
    try:
        generate_speed_archive(root, size)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_generator_memory_is_flat_in_scene_size(tmp_path):
    """9 times the pixels, the same peak: the generator holds windows, never whole bands (a full tile's is 480 MB)."""
    small, large = _peak_bytes(tmp_path / "small", 512), _peak_bytes(tmp_path / "large", 1536)
    assert large < 1.3 * small, f"peak {large / 2**20:.1f} MiB at 1536 px against {small / 2**20:.1f} MiB at 512 px"
    optical = next((tmp_path / "large").rglob("red.tif"))
    with rasterio.open(optical) as src:
        assert src.shape == (1536, 1536) and src.block_shapes[0] == (512, 512)
        red = src.read(1)
    # every window was rendered and written (DN >= 1), and windows are not copies of one another
    assert red.min() >= 1 and not np.array_equal(red[:512, :512], red[512:1024, :512])


def test_an_archive_of_the_same_size_and_version_is_reused(tmp_path):
    info = generate_speed_archive(tmp_path, 256)
    stamp = (tmp_path / "manifest.json").stat().st_mtime_ns
    assert generate_speed_archive(tmp_path, 256) == info
    assert (tmp_path / "manifest.json").stat().st_mtime_ns == stamp


def test_sizes_by_name_or_pixels():
    assert (size_of("1k"), size_of("4k"), size_of("full"), size_of("300")) == (1024, 4096, 10980, 300)
    with pytest.raises(InputError, match="unknown size"):
        size_of("huge")
    with pytest.raises(InputError, match="at least 256"):
        size_of("64")


def test_the_bench_runs_the_flow_end_to_end(tmp_path, prefect_api, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "speed", "--out", str(out), "--sizes", "300", "--methods", "phase", "--workers", "1"]
    assert main([*argv, "--memory-limit", "1500MiB"]) == 0
    printed = capsys.readouterr().out.strip().split("\n\n")
    for block in printed[:2]:  # the wall-time table, the CPU/memory table: one row each, every cell filled
        header, _, *rows = block.splitlines()
        assert len(rows) == 1 and rows[0].count("|") == header.count("|"), block
        assert all(cell.strip() for cell in rows[0].strip("|").split("|")), rows[0]
    assert all(column in printed[0].splitlines()[0] for column in COLUMNS)

    (run,) = [SpeedRun.from_json(r) for r in json.loads((out / "speed.json").read_text())]
    split = run.split()
    measured = sum(v for k, v in split.items() if k != "other")
    # the split accounts for the wall, but for Prefect's orchestration (`other`), which a loaded machine stretches
    assert abs(run.wall_seconds - measured) <= 0.25 * run.wall_seconds + 2.0, split
    assert split["idle"] >= -0.05 * split["register"] - 0.5, split  # workers were not busier than the tile stage
    assert all(run.worker_seconds[s] > 0 for s in ("load", "register", "warp", "write")), run.worker_seconds
    assert all(run.worker_cpu[s] > 0 for s in ("other", "register", "warp", "write")), run.worker_cpu
    assert run.overhead > 1 and run.client_cpu > 0
    assert run.threads == 1 and len(run.peak_rss) == 1 and min(run.peak_rss.values()) > 50 * 2**20
    assert run.tiles == 1 and run.cube_bytes > 0 and run.input_bytes > 0
    assert run.memory_limit == "1500MiB" and "| 300 | phase | 1 (1500MiB each) |" in printed[0]
    assert not (out / "cubes" / "300-phase-w1.zarr").exists()  # cubes are dropped unless --keep-cubes

    docs = tmp_path / "performance.md"
    docs.write_text(f"# Performance\n\nprose\n\n{MARK_START}\nold\n{MARK_END}\n\nmore prose\n")
    update_docs(docs, [run], "one run", "dsmar bench speed --sizes 300")
    text = docs.read_text()
    assert "old" not in text and table([run]) in text and text.endswith("more prose\n")

    # --resume keeps the measured run (same dsmar version, size, method, workers and budget) and measures no other
    assert main([*argv, "--memory-limit", "1500MiB", "--resume"]) == 0
    assert "kept from" in capsys.readouterr().err
    assert [SpeedRun.from_json(r) for r in json.loads((out / "speed.json").read_text())] == [run]


def test_a_bench_plan_takes_per_size_workers_and_per_method_budgets():
    plan = plan_runs(["1k", "full"], ["cfog", "dsmar:augment=1"], (1, 2), {"full": (2,)}, {"": "2GiB", "dsmar": "1GiB"})
    assert [(p.size, p.method, p.workers, p.memory_limit) for p in plan] == [
        ("1k", "cfog", 1, "2GiB"),
        ("1k", "cfog", 2, "2GiB"),
        ("1k", "dsmar:augment=1", 1, "1GiB"),
        ("1k", "dsmar:augment=1", 2, "1GiB"),
        ("full", "cfog", 2, "2GiB"),
        ("full", "dsmar:augment=1", 2, "1GiB"),
    ]
    assert plan_runs(["1k"], ["cfog"], (1,), {}, {"": None})[0].memory_limit is None


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--workers-for", "huge=2"], "--workers-for takes SIZE=COUNTS"),
        (["--workers-for", "300=0"], "counts of at least 1"),
        (["--memory-limit", "mind=1GiB"], "not one of --methods"),
        (["--memory-limit", "phase=lots"], "memory"),
    ],
)
def test_a_bad_bench_option_is_one_line(tmp_path, capsys, extra, message):
    argv = ["bench", "speed", "--out", str(tmp_path), "--sizes", "300", "--methods", "phase", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "archives").exists()  # refused before generating anything


def test_a_run_that_lost_a_worker_shows_its_peak_as_a_floor():
    """The nanny restarts a worker above 95 % of its limit: its peak is not measured, only bounded from below."""
    from dataclasses import replace

    run = SpeedRun("1k", "cfog", 2, 2, (100, 100), 1, 1.0, {}, {}, {"w1": 700 * 2**20}, {}, 0.0, 0, 0)
    assert peak_cell(run) == "700"
    assert peak_cell(replace(run, workers_restarted=1, memory_limit="1GiB")) == ">=973 (1 restarted)"
    assert peak_cell(replace(run, workers_restarted=2)) == "700 (2 restarted)"


def test_a_resumed_bench_tells_commits_apart():
    """Runs are matched by the code that measured them: this checkout's version carries its commit."""
    import subprocess

    from dsmar.commands.bench_speed import measuring_version
    from kernel.version import __version__

    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True, check=True)
    assert measuring_version().removesuffix("-dirty") == f"{__version__}+{head.stdout.strip()}"
