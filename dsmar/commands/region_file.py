"""Reading a region file (kernel/region.py) at the command line: the file, its output path and its method."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from catalogs.profiles import profile_for
from kernel.errors import InputError
from kernel.region import Region, parse_region
from models.api import method_spec


def add_region_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("region", metavar="REGION.toml", help="region file (docs/operations.md)")


def load_region(path: str) -> Region:
    """The region file at `path`, validated as `dsmar run` validates its options. A relative `out` is
    resolved against the file's folder, so the cube is the same wherever a command or worker runs."""
    from pipeline.outputs import check_output  # zarr and xarray load only when a region is configured

    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as err:
        raise InputError(f"cannot read region file {path}: {err.strerror or err}") from None
    region = parse_region(text, str(path))
    out = region.out
    if "://" not in out and not Path(out).expanduser().is_absolute():
        out = str((file.resolve().parent / out).resolve())
    try:
        profile_for(region.search)  # an unknown profile, or a local one without catalog.url, fails here
        return replace(region, out=check_output(out), method=method_spec(region.method).text)
    except InputError as err:
        raise InputError(f"{path}: {err}") from None
