"""The run report: one section per acquisition date, kept across runs.

report.json beside report.md holds every date's section (its numbers and the names of its figures); each
run merges its dates into it under a lock (a newer section replaces the same date's, whose figures it does
not rewrite are deleted) and regenerates report.md from it, so backfill windows and reruns add to one report.
Figures are named by date. Thumbnails come from the chunk tasks (every `step`-th pixel), so the report never
rereads the cube at full resolution, except for the few small windows of the crops and the residual check.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from kernel.contracts import MODALITY, REFERENCE, REGISTERED
from pipeline import report_figures as figures
from pipeline.register_tiles import ChunkResult
from pipeline.residual_check import KINDS, Residuals
from pipeline.tiles import Window

log = logging.getLogger("dsmar")

THUMB_MAX = 768  # longest side of a quicklook, in pixels
STATE, MARKDOWN = "report.json", "report.md"
STATE_VERSION = 1
# Figures of the report layout before report.json, named by run index: dropped when such a report is upgraded.
EARLIER_FIGURES = "t[0-9][0-9]_*.png"
QUANTILES = (10, 25, 50, 75, 90)  # of the confidence, in percent
TRUTH_LINES = (
    ("unregistered", "Geolocation error vs injected truth before registration"),
    ("error", "End-point error vs injected truth"),
)


def thumb_step(shape: tuple[int, int], longest: int = THUMB_MAX) -> int:
    return max(1, math.ceil(max(shape) / longest))


def assemble(results: Iterable[ChunkResult], shape: tuple[int, int], step: int) -> dict[str, np.ndarray]:
    """Mosaic the chunks' thumbnails into whole-grid quicklooks (NaN where a chunk was skipped)."""
    out_shape = (math.ceil(shape[0] / step), math.ceil(shape[1] / step))
    mosaics: dict[str, np.ndarray] = {}
    for result in results:
        core = result.tile.core
        r, c = math.ceil(core.row / step), math.ceil(core.col / step)
        for name, thumb in result.thumbnails.items():
            if name not in mosaics:
                mosaics[name] = np.full((*thumb.shape[:-2], *out_shape), np.nan, np.float32)
            mosaics[name][..., r : r + thumb.shape[-2], c : c + thumb.shape[-1]] = thumb
    return mosaics


@dataclass(frozen=True)
class ErrorStats:
    median: float
    mean: float
    p90: float

    @classmethod
    def of(cls, epe: np.ndarray) -> ErrorStats | None:
        valid = epe[np.isfinite(epe)]
        if valid.size == 0:
            return None
        return cls(float(np.median(valid)), float(valid.mean()), float(np.percentile(valid, 90)))


@dataclass(frozen=True)
class Crop:
    """A small full-resolution window of the grid, as [0, 1] display bands: reference, moving before and after."""

    window: Window
    reference: np.ndarray
    before: np.ndarray
    after: np.ndarray


@dataclass(frozen=True)
class ResidualCheck:
    """The independent tie-point check (`kind`: a matcher of pipeline.residual_check) before and after."""

    kind: str
    before: Residuals | None
    after: Residuals | None


@dataclass(frozen=True)
class TimeReport:
    """What the report shows for one time step (one scene set)."""

    label: str  # the optical acquisition, "2024-05-01 10:20:31"
    items: Mapping[str, str]  # "optical"/"sar"/"dem" -> item ids
    tiles_written: int
    tiles_skipped: int
    quicklooks: Mapping[str, np.ndarray] = field(default_factory=dict)
    errors: Mapping[str, ErrorStats | None] = field(default_factory=dict)  # modality -> error vs truth
    truth: Mapping[str, np.ndarray] = field(default_factory=dict)  # modality -> decimated truth (2, h, w)
    unregistered: Mapping[str, ErrorStats | None] = field(default_factory=dict)  # modality -> the input's own error
    flagged: Mapping[str, Sequence[tuple[int, int]]] = field(default_factory=dict)  # modality -> flagged tiles (i, j)
    crops: Mapping[str, Sequence[Crop]] = field(default_factory=dict)  # modality -> zoomed windows
    residuals: Mapping[str, ResidualCheck] = field(default_factory=dict)  # modality -> independent check

    @property
    def key(self) -> str:
        """The date as file names and report.json carry it: "2024-05-01T10-20-31"."""
        return self.label.replace(" ", "T").replace(":", "-")


def write_report(
    directory: Path,
    times: Sequence[TimeReport],
    *,
    title: str,
    cube: str,
    method: str,
    summary_lines: Sequence[str],
    step: int,
) -> Path:
    """Merge `times` into the report in `directory` (figures, report.json) and regenerate report.md; its path."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    with _locked(directory):
        if not (directory / STATE).exists():
            for stale in directory.glob(EARLIER_FIGURES):
                stale.unlink()
        sections = _read_sections(directory)
        for time in times:
            section = _write_section(directory, time, method, step)
            previous = sections.get(time.key)
            if previous is not None:
                for name in set(previous["files"]) - set(section["files"]):
                    (directory / name).unlink(missing_ok=True)
            sections[time.key] = section
        state = {
            "version": STATE_VERSION,
            "title": title,
            "cube": cube,
            "method": method,
            "updated": datetime.now(UTC).isoformat(timespec="seconds"),
            "last_run": list(summary_lines),
            "sections": dict(sorted(sections.items())),
        }
        _replace(directory / STATE, json.dumps(state, indent=1) + "\n")
        _replace(directory / MARKDOWN, "\n".join(render(state)) + "\n")
    return directory / MARKDOWN


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """An exclusive advisory lock on the report folder itself, for one read-merge-write: concurrent runs (threads
    or processes) writing one report take turns, and the kernel releases it if a run dies."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _read_sections(directory: Path) -> dict[str, dict]:
    path = directory / STATE
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
        if state.get("version") == STATE_VERSION:
            return dict(state["sections"])
    except (OSError, ValueError, AttributeError, KeyError):
        pass
    log.warning("%s is not a report state this version reads; the report starts again from this run's dates", path)
    return {}


def _replace(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text)
    partial.replace(path)


def _write_section(directory: Path, time: TimeReport, method: str, step: int) -> dict:
    """Draw one date's figures into `directory`; return its section (numbers and figure names, JSON-ready)."""
    q = time.quicklooks
    modalities: dict[str, dict] = {}
    for modality in REGISTERED:
        spec = MODALITY[modality]
        if spec.displacement_var not in q:
            continue
        title = modality.upper()
        named = {kind: f"{time.key}_{modality}_{kind}.png" for kind in ("checkerboard", "field", "confidence")}
        reference = figures.normalise(q[REFERENCE])
        before, after = (figures.display(q[name], spec.elevation) for name in (f"{modality}_before", modality))
        figures.save_checkerboards(directory / named["checkerboard"], reference, before, after, title)
        figures.save_field(directory / named["field"], q[spec.displacement_var], q[spec.confidence_var], step, title)
        figures.save_confidence_histogram(directory / named["confidence"], q[spec.confidence_var], title)
        if time.crops.get(modality):
            named["crops"] = f"{time.key}_{modality}_crops.png"
            figures.save_crops(directory / named["crops"], time.crops[modality], title)
        if modality in time.truth:
            named["error"] = f"{time.key}_{modality}_error.png"
            figures.save_error(directory / named["error"], q[spec.displacement_var], time.truth[modality], title)
        check = time.residuals.get(modality)
        modalities[modality] = {
            "figures": named,
            "confidence": _quantiles(q[spec.confidence_var]),
            "flagged": [list(map(int, tile)) for tile in time.flagged.get(modality, ())],
            "residual": None
            if check is None
            else {"kind": check.kind, **_stats(before=check.before, after=check.after)},
            **_stats(error=time.errors.get(modality), unregistered=time.unregistered.get(modality)),
        }
    return {
        "date": time.key,
        "label": time.label,
        "method": method,
        "items": dict(time.items),
        "tiles_written": time.tiles_written,
        "tiles_skipped": time.tiles_skipped,
        "modalities": modalities,
        "files": sorted(name for m in modalities.values() for name in m["figures"].values()),
    }


def _stats(**named) -> dict[str, dict | None]:
    return {name: None if stats is None else asdict(stats) for name, stats in named.items()}


def _quantiles(confidence: np.ndarray) -> dict[str, float] | None:
    values = confidence[np.isfinite(confidence)]
    if values.size == 0:
        return None
    return {"mean": float(values.mean()), **{f"p{q}": float(np.percentile(values, q)) for q in QUANTILES}}


def render(state: Mapping) -> list[str]:
    """report.md from the state: the latest run's summary, an overview table, then one section per date."""
    sections = list(state["sections"].values())
    lines = [f"# {state['title']}", "", f"Cube: `{state['cube']}`  ", f"Method: `{state['method']}`", ""]
    lines += ["Latest run:", "", *[f"- {line}" for line in state["last_run"]], ""]
    lines += _overview(sections)
    for section in sections:
        lines += _render_section(section)
    return lines


def _overview(sections: Sequence[Mapping]) -> list[str]:
    """One row per date: the residual check's CE90 before -> after and the flagged tiles, per modality."""
    present = [m for m in REGISTERED if any(m in s["modalities"] for s in sections)]
    if not present:
        return []
    head = ["date", *(f"{m.upper()} CE90 before -> after (px)" for m in present), "flagged tiles"]
    lines = [f"| {' | '.join(head)} |", f"|{'---|' * len(head)}"]
    for section in sections:
        cells = [f"[{section['label']}](#{section['date'].lower()})"]
        for modality in present:
            check = (section["modalities"].get(modality) or {}).get("residual") or {}
            cells.append(" -> ".join(_ce90(check.get(when)) for when in ("before", "after")) if check else "-")
        flagged = {m: len(v["flagged"]) for m, v in section["modalities"].items()}
        cells.append(", ".join(f"{m.upper()} {n}" for m, n in flagged.items()) or "-")
        lines.append(f"| {' | '.join(cells)} |")
    return [*lines, ""]


def _ce90(stats: Mapping | None) -> str:
    return "n/a" if stats is None else f"{stats['ce90_px']:.2f}"


def _render_section(section: Mapping) -> list[str]:
    lines = [f'<a id="{section["date"].lower()}"></a>', "", f"## {section['label']}", ""]
    lines += [f"- {name}: `{item}`" for name, item in section["items"].items()]
    lines += [
        f"- tiles written: {section['tiles_written']}, skipped (already up to date): {section['tiles_skipped']}",
        f"- method: `{section['method']}`",
        "",
    ]
    for modality, data in section["modalities"].items():
        named = data["figures"]
        lines += [f"### {modality.upper()}", "", f"![{modality} before/after]({named['checkerboard']})", ""]
        if "crops" in named:
            lines += [
                "Zoomed crops at full resolution, the optical edges in red over the moving image before and after:",
                "",
                f"![{modality} zoomed before/after]({named['crops']})",
                "",
            ]
        lines += _residual_lines(data["residual"])
        lines += _confidence_lines(data["confidence"], named["confidence"])
        flagged = data["flagged"]
        tiles = ", ".join(f"({i}, {j})" for i, j in flagged)
        lines += [f"Flagged tiles: {len(flagged)}" + (f" (tile row, col): {tiles}" if flagged else ""), ""]
        lines += [f"![{modality} displacement and confidence]({named['field']})", ""]
        if "error" in named:
            lines += [f"![{modality} error vs truth]({named['error']})", ""]
        for key, what in TRUTH_LINES:
            stats = data[key]
            if stats is not None:
                lines += [
                    f"{what}: median {stats['median']:.3f} px, mean {stats['mean']:.3f} px, "
                    f"90th percentile {stats['p90']:.3f} px",
                    "",
                ]
    return lines


def _residual_lines(check: Mapping | None) -> list[str]:
    if check is None:
        return []
    lines = [
        f"Independent residual check: tie points by {KINDS[check['kind']]} of gradient magnitude, "
        "on the unregistered input and on the aligned output:",
        "",
        "| | tie points / windows | CE90 (px) | RMSE (px) | CE90 (m) | RMSE (m) |",
        "|---|---|---|---|---|---|",
    ]
    for when, what in (("before", "unregistered input"), ("after", "aligned output")):
        r = check[when]
        if r is None:
            lines.append(f"| {what} | 0 | n/a | n/a | n/a | n/a |")
        else:
            lines.append(
                f"| {what} | {r['points']} / {r['windows']} | {r['ce90_px']:.2f} | {r['rmse_px']:.2f} | "
                f"{r['ce90_m']:.1f} | {r['rmse_m']:.1f} |"
            )
    return [*lines, ""]


def _confidence_lines(quantiles: Mapping | None, figure: str) -> list[str]:
    if quantiles is None:
        return ["Confidence: no valid pixels", ""]
    spread = ", ".join(f"p{q} {quantiles[f'p{q}']:.2f}" for q in QUANTILES)
    return [
        f"Confidence (quicklook pixels): mean {quantiles['mean']:.2f}; {spread}",
        "",
        f"![confidence]({figure})",
        "",
    ]
