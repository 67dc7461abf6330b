"""dsmar from Python (a notebook): open a cube, run a region. Heavy imports wait until a function is called."""

from __future__ import annotations

import argparse
import contextlib
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from kernel.errors import InputError

if TYPE_CHECKING:
    import xarray as xr

    from flows.register_region import RunSummary


def open_cube(url: str, *, split_bands: bool = False) -> xr.Dataset:
    """The cube at `url` (a path or an s3:// URL, docs/storage.md), lazily opened with its CRS (Contract 3).

    `split_bands=True` gives one (time, y, x) variable per band and component (`optical_red`,
    `displacement_sar_dy`, ...), the shape rioxarray's `Dataset.rio.reproject` takes."""
    from pipeline.cube import open_cube as open_zarr_cube  # loads rioxarray: the .rio accessor

    ds = open_zarr_cube(url)
    return split_by_band(ds) if split_bands else ds


def split_by_band(ds: xr.Dataset) -> xr.Dataset:
    """Every (time, band, y, x) variable as one (time, y, x) variable per band: `<variable>_<band>`."""
    out = ds.copy()
    for name, var in ds.data_vars.items():
        extra = [d for d in var.dims if d not in ("time", "y", "x")]
        if not extra or not {"y", "x"} <= set(var.dims):
            continue
        (dim,) = extra
        for label in ds[dim].values:
            band = var.sel({dim: label}, drop=True)
            band.attrs = {**var.attrs, "long_name": f"{var.attrs.get('long_name', name)}: {label}"}
            out[f"{name}_{label}"] = band
        out = out.drop_vars(name)
    return out.drop_vars([d for d in ds.dims if d not in out.dims and d in out.coords])


def register_region(*, bbox: Sequence[float], start: str, end: str, out: str, **options: Any) -> RunSummary:
    """Run `dsmar run` from Python: the same options (keyword names as the flags, `tile_size=` for
    `--tile-size`), validated the same way, the same flow, with its progress lines on stderr.

    Returns the run's summary (`.out`, `.tiles_written`, `.outcomes`, ...); bad options raise InputError."""
    from dsmar.commands.run import config_from_args, execute
    from flows.environment import apply_defaults

    args = _run_args({"bbox": list(bbox), "start": str(start), "end": str(end), "out": str(out), **options})
    apply_defaults()
    return execute(config_from_args(args))


def _run_args(options: dict[str, Any]) -> argparse.Namespace:
    """The options as `dsmar run` parses them; an unknown or malformed one is one InputError line."""
    from dsmar.commands.run import add_run_arguments

    parser = argparse.ArgumentParser(prog="dsmar.register_region")
    add_run_arguments(parser)
    argv: list[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        values = value if isinstance(value, list | tuple) else [value]
        argv += [flag] if value is True else [flag, *map(str, values)]
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            return parser.parse_args(argv)
    except SystemExit:
        reason = errors.getvalue().strip().splitlines()[-1:] or ["bad options"]
        raise InputError(f"register_region: {reason[0].split('error: ')[-1]}") from None
