"""The cube's STAC description, so it is found the way its inputs were: a static catalog beside the cube.

`<cube>.stac/catalog.json` holds one Collection (`dsmar-<cube name>`) with one Item for the cube: its
footprint and period, the datacube extension (`cube:dimensions`, `cube:variables`), one `data` asset
with the Zarr media type and `xarray:open_kwargs` (xarray-assets extension), and `derived_from` links to
every input item. It is rebuilt from the cube after each run, so it always describes the whole cube.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import xarray as xr
from pyproj import CRS, Transformer

from kernel.contracts import REFERENCE, REGISTERED
from pipeline.cube_reorder import local_dir

ZARR_MEDIA_TYPE = "application/vnd+zarr"
DATACUBE = "https://stac-extensions.github.io/datacube/v2.2.0/schema.json"
XARRAY_ASSETS = "https://stac-extensions.github.io/xarray-assets/v1.0.0/schema.json"
OPEN_KWARGS = {"engine": "zarr", "consolidated": True, "decode_coords": "all"}  # Contract 3's way to open it
ITEM_COLUMNS = {REFERENCE: "optical_item", **{m: f"{m}_item" for m in REGISTERED}}


def catalog_dir(cube_url: str) -> Path | None:
    """Where a local cube's catalog lives; None for a remote cube (its catalog is not written)."""
    root = local_dir(cube_url)
    return None if root is None else root.with_name(root.name + ".stac")


def write_cube_stac(cube_url: str) -> Path | None:
    """(Re)write the static catalog of the cube at `cube_url`; return its catalog.json (None if remote)."""
    folder = catalog_dir(cube_url)
    if folder is None:
        return None
    with xr.open_zarr(cube_url, decode_coords="all", consolidated=True) as ds:
        item = cube_item(ds, Path(cube_url).resolve().as_uri(), Path(cube_url).stem)
    collection = pystac.Collection(
        id=item.collection_id or "",
        description=f"dsmar aligned optical / SAR / DEM cube {Path(cube_url).name}",
        extent=pystac.Extent(
            pystac.SpatialExtent([item.bbox]),
            pystac.TemporalExtent(
                [[_datetime(item.properties["start_datetime"]), _datetime(item.properties["end_datetime"])]]
            ),
        ),
        license="other",
        title=item.properties["title"],
    )
    collection.add_item(item)
    catalog = pystac.Catalog(id=f"{collection.id}-catalog", description=f"STAC catalog of {Path(cube_url).name}")
    catalog.add_child(collection)
    building = folder.with_name(folder.name + ".building")
    shutil.rmtree(building, ignore_errors=True)
    catalog.normalize_hrefs(f"{building}/")  # the slash: pystac takes a name with a dot for a file
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    shutil.rmtree(folder, ignore_errors=True)
    building.rename(folder)
    return folder / "catalog.json"


def cube_item(ds: xr.Dataset, href: str, name: str) -> pystac.Item:
    """The Item of one cube: footprint, period, datacube dimensions and variables, asset and provenance links."""
    bbox = _lonlat_bounds(ds)
    times = ds["time"].values
    start, end = (_datetime(str(np.datetime_as_string(t, unit="s")) + "Z") for t in (times.min(), times.max()))
    west, south, east, north = bbox
    item = pystac.Item(
        id=name,
        geometry={
            "type": "Polygon",
            "coordinates": [[[west, south], [east, south], [east, north], [west, north], [west, south]]],
        },
        bbox=bbox,
        datetime=None,
        properties={
            "start_datetime": start.isoformat().replace("+00:00", "Z"),
            "end_datetime": end.isoformat().replace("+00:00", "Z"),
            "title": ds.attrs.get("title", name),
            "dsmar:method": ds.attrs.get("method", ""),
            "dsmar:software": ds.attrs.get("software", ""),
            "cube:dimensions": _dimensions(ds),
            "cube:variables": _variables(ds),
        },
        stac_extensions=[DATACUBE, XARRAY_ASSETS],
        collection=f"dsmar-{name}",
    )
    item.add_asset(
        "data",
        pystac.Asset(
            href,
            title="aligned cube (Zarr v3)",
            media_type=ZARR_MEDIA_TYPE,
            roles=["data"],
            extra_fields={"xarray:open_kwargs": OPEN_KWARGS},
        ),
    )
    for link in _input_links(ds):
        item.add_link(pystac.Link("derived_from", link, media_type="application/geo+json"))
    return item


def _lonlat_bounds(ds: xr.Dataset) -> list[float]:
    to_lonlat = Transformer.from_crs(CRS.from_user_input(ds.rio.crs), "EPSG:4326", always_xy=True)
    west, south, east, north = to_lonlat.transform_bounds(*ds.rio.bounds(), densify_pts=21)
    return [float(west), float(south), float(east), float(north)]


def _dimensions(ds: xr.Dataset) -> dict:
    crs = CRS.from_user_input(ds.rio.crs)
    system: int | str = crs.to_epsg() or crs.to_wkt()
    dims: dict[str, dict] = {}
    for axis in ("x", "y"):
        values = ds[axis].values
        step = float(values[1] - values[0]) if len(values) > 1 else None
        dims[axis] = {
            "type": "spatial",
            "axis": axis,
            "extent": [float(values.min()), float(values.max())],
            "reference_system": system,
            **({"step": step} if step is not None else {}),
        }
    times = [str(np.datetime_as_string(t, unit="s")) + "Z" for t in ds["time"].values]
    dims["time"] = {"type": "temporal", "extent": [times[0], times[-1]], "values": times}
    for dim in ds.dims:
        if dim not in dims and dim in ds.coords:
            dims[str(dim)] = {
                "type": "bands" if str(dim).startswith("band") else "other",
                "values": [str(v) for v in ds[dim].values],
            }
    return dims


def _variables(ds: xr.Dataset) -> dict:
    return {
        str(name): {
            "dimensions": list(map(str, var.dims)),
            "type": "data" if {"y", "x"} <= set(var.dims) else "auxiliary",
            "description": var.attrs.get("long_name", ""),
            **({"unit": var.attrs["units"]} if "units" in var.attrs else {}),
        }
        for name, var in ds.data_vars.items()
    }


def _input_links(ds: xr.Dataset) -> list[str]:
    """STAC API item URLs of every input item, from the cube's provenance and its catalog attrs."""
    catalog = json.loads(ds.attrs.get("catalog", "{}"))
    url = str(catalog.get("url", "")).rstrip("/")
    links: list[str] = []
    for modality, column in ITEM_COLUMNS.items():
        if column not in ds or modality not in catalog:
            continue
        ids = {i for value in ds[column].values for i in str(value).split(",") if i}
        links += [f"{url}/collections/{catalog[modality]}/items/{i}" for i in sorted(ids)]
    return links


def _datetime(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)
