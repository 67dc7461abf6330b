"""The speed benchmark's measurements and table (`dsmar bench speed`; the runs themselves are in dsmar/commands).

One `SpeedRun` per archive size, method and worker count: the flow's own timings (`pipeline.timings`), split into
wall-clock columns that add up to the run's wall time:
- `search`: the catalog search; `setup`: planning the cube, starting and closing the cluster, laying out the cube,
  opening the inputs (headers) lazily;
- `load`, `register`, `warp`, `write`: the tile stage's worker core-seconds of each kind (`pipeline.timings`)
  divided by the worker threads, i.e. their share of the tile stage's wall time;
- `idle`: the rest of the tile stage's wall time (workers waiting: scheduling, transfers, an uneven last wave);
- `finish`: scoring (reads the cube only where the archive carries truth), the cube's STAC catalog, the report;
- `other`: what none of these measured (Prefect's task orchestration); small by construction of the checks.

And CPU time, which a machine shared with other jobs does not inflate as it inflates the wall clock: the client
process's and the workers' (`pipeline.timings`: `register`, `warp`, `write` timed around those steps, `other`
the rest of the worker processes: the input graphs' reads and resampling, Dask, imports).

Derived, per cube megapixel (MP: cube pixels, every modality of one date): end-to-end s/MP = wall / MP;
end-to-end CPU-s/MP = all CPU seconds (client and workers) / MP; registration alone = the registration's CPU
seconds / MP (each tile of each modality through the method, inside the workers). The pipeline overhead =
end-to-end CPU seconds / registration CPU seconds (1.0: all the run's CPU went into registering); the wall
overhead = wall x worker threads / the registration tasks' wall seconds, the same ratio on the wall clock.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kernel.config import normalise_memory
from pipeline.timings import WORKER_STAGES

SETUP_STAGES = ("plan", "cluster", "layout", "inputs")
FINISH_STAGES = ("score", "stac", "report")
COLUMNS = ("search", "setup", *WORKER_STAGES, "idle", "finish", "other")
MARK_START, MARK_END = "<!-- speed-table:start -->", "<!-- speed-table:end -->"


@dataclass(frozen=True)
class SpeedRun:
    size: str  # the size's name: 1k, 4k, full, or a number of pixels
    method: str
    workers: int
    threads: int
    cube_shape: tuple[int, int]
    tiles: int
    wall_seconds: float
    stages: dict[str, float]  # client wall seconds per stage (`pipeline.timings.StageClock`)
    worker_seconds: dict[str, float]  # worker core-seconds per `WORKER_STAGES` stage
    peak_rss: dict[str, int]  # bytes per worker
    worker_cpu: dict[str, float]  # CPU seconds of the workers per stage (`pipeline.timings.cpu_between`)
    client_cpu: float  # CPU seconds of the flow's process
    cube_bytes: int  # on disk
    input_bytes: int  # the archive's rasters
    dates: int = 1
    notes: dict = field(default_factory=dict)
    memory_limit: str | None = None  # per worker, as given to `--memory-limit` (None: Dask's share of the machine)
    workers_restarted: int = 0  # workers that left mid-run: their CPU and peak memory are missing (`peak_cell`)
    version: str = ""  # the code that measured it (dsmar version + commit, `measuring_version`); a resumed bench reuses only its own
    measured: str = ""  # when the run ended, UTC (ISO 8601)

    @property
    def megapixels(self) -> float:
        return self.cube_shape[0] * self.cube_shape[1] / 1e6

    def split(self) -> dict[str, float]:
        """Wall seconds per `COLUMNS` column; they add up to `wall_seconds`."""
        stage = self.stages.get
        threads = max(self.threads, 1)
        parts = {
            "search": stage("search", 0.0),
            "setup": sum(stage(s, 0.0) for s in SETUP_STAGES),
            **{s: self.worker_seconds.get(s, 0.0) / threads for s in WORKER_STAGES},
        }
        parts["idle"] = stage("tiles", 0.0) - sum(parts[s] for s in WORKER_STAGES)
        parts["finish"] = sum(stage(s, 0.0) for s in FINISH_STAGES)
        parts["other"] = self.wall_seconds - sum(parts.values())
        return parts

    @property
    def cpu_seconds(self) -> float:
        return self.client_cpu + sum(self.worker_cpu.values())

    @property
    def overhead(self) -> float:
        """End-to-end CPU seconds over the registration's CPU seconds."""
        return self.cpu_seconds / max(self.worker_cpu.get("register", 0.0), 1e-9)

    @property
    def wall_overhead(self) -> float:
        """End-to-end core-seconds (wall x threads) over the registration tasks' wall seconds."""
        return self.wall_seconds * self.threads / max(self.worker_seconds.get("register", 0.0), 1e-9)

    @property
    def peak_rss_max(self) -> int:
        return max(self.peak_rss.values(), default=0)

    def cube_bytes_per_pixel(self) -> float:
        """Stored bytes per cube pixel and date (all variables, compressed as the cube encodes them)."""
        return self.cube_bytes / (self.cube_shape[0] * self.cube_shape[1] * self.dates)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> SpeedRun:
        return cls(**{**data, "cube_shape": tuple(data["cube_shape"])})


@dataclass(frozen=True)
class PlannedRun:
    """One measurement a bench asks for: which archive, method, worker count and per-worker memory budget."""

    size: str
    method: str
    workers: int
    memory_limit: str | None

    def done_by(self, run: SpeedRun, version: str) -> bool:
        """Whether `run` is this measurement, taken by the same dsmar `version`."""
        key = (run.size, run.method, run.workers, run.memory_limit, run.version)
        return key == (self.size, self.method, self.workers, self.memory_limit, version)


def plan_runs(
    sizes: list[str],
    methods: list[str],
    workers: tuple[int, ...],
    workers_for: dict[str, tuple[int, ...]],
    memory_limits: dict[str, str | None],
) -> list[PlannedRun]:
    """Every (size, method, worker count) in that order: a size's worker counts are `workers_for[size]` where
    given, else `workers`; a method's budget is `memory_limits[its name]`, else `memory_limits[""]` (the
    default: None, Dask's share of the machine)."""
    default = memory_limits.get("")
    return [
        PlannedRun(size, method, count, memory_limits.get(method.split(":", 1)[0], default))
        for size in sizes
        for method in methods
        for count in workers_for.get(size, workers)
    ]


def peak_cell(run: SpeedRun) -> str:
    """The peak RSS per worker (MB) as the table shows it: where a worker left mid-run (the nanny restarts one
    above 95 % of its memory limit), at least 95 % of the limit, with the count of those workers."""
    peak = f"{run.peak_rss_max / 2**20:.0f}"
    if not run.workers_restarted:
        return peak
    limit = normalise_memory(run.memory_limit) if run.memory_limit else None
    floor = f">={0.95 * limit / 2**20:.0f}" if limit else peak
    return f"{floor} ({run.workers_restarted} restarted)"


def scaling(runs: list[SpeedRun], run: SpeedRun) -> float | None:
    """Throughput of `run` over the 1-worker run of the same size, method and memory limit (None without one)."""
    single = [
        r for r in runs if (r.size, r.method, r.workers, r.memory_limit) == (run.size, run.method, 1, run.memory_limit)
    ]
    return single[0].wall_seconds / run.wall_seconds if single else None


def table(runs: list[SpeedRun]) -> str:
    """Two markdown tables of the runs: the wall-time split and scaling; CPU time, overhead, memory and storage."""
    wall = [
        "| size | method | workers | cube px | tiles | wall s | " + " | ".join(COLUMNS) + " | s/MP | vs 1 worker |",
    ]
    cpu = [
        "| size | method | workers | CPU s client | CPU s other | CPU s register | CPU s warp | CPU s write | "
        "CPU-s/MP | register CPU-s/MP | overhead | wall overhead | peak RSS/worker MB | cube B/px | input B/px |"
    ]
    for r in runs:
        split, ratio, mp = r.split(), scaling(runs, r), r.megapixels
        limit = f" ({r.memory_limit} each)" if r.memory_limit else ""
        name = f"| {r.size} | {r.method} | {r.workers}{limit} | "
        wall.append(
            f"{name}{r.cube_shape[0]}x{r.cube_shape[1]} | {r.tiles} | {r.wall_seconds:.1f} | "
            + " | ".join(f"{split[c]:.1f}" for c in COLUMNS)
            + f" | {r.wall_seconds / mp:.2f} | {'-' if ratio is None else f'{ratio:.2f}x'} |"
        )
        cpu.append(
            f"{name}{r.client_cpu:.1f} | "
            + " | ".join(f"{r.worker_cpu.get(s, 0.0):.1f}" for s in ("other", "register", "warp", "write"))
            + f" | {r.cpu_seconds / mp:.2f} | {r.worker_cpu.get('register', 0.0) / mp:.2f} | {r.overhead:.2f} | "
            f"{r.wall_overhead:.2f} | {peak_cell(r)} | {r.cube_bytes_per_pixel():.1f} | "
            f"{r.input_bytes / (r.cube_shape[0] * r.cube_shape[1]):.1f} |"
        )
    return "\n\n".join("\n".join([rows[0], "|" + "---|" * (rows[0].count("|") - 1), *rows[1:]]) for rows in (wall, cpu))


def write_results(runs: list[SpeedRun], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([r.to_json() for r in runs], indent=1))


def update_docs(path: Path, runs: list[SpeedRun], heading: str, command: str) -> None:
    """Replace the table between the markers of docs/performance.md (the prose around it is written by hand)."""
    text = path.read_text()
    if MARK_START not in text or MARK_END not in text:
        raise ValueError(f"{path} lacks the markers {MARK_START} and {MARK_END}")
    before, rest = text.split(MARK_START, 1)
    after = rest.split(MARK_END, 1)[1]
    block = f"{MARK_START}\n{heading}\n\n{table(runs)}\n\nRerun: `{command}`\n{MARK_END}"
    path.write_text(before + block + after)
