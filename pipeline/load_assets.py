"""The one eager look at each asset before the lazy load: its GeoTIFF header.

Two things cannot be known from STAC metadata alone and go wrong silently later: an asset still
in radar geometry (GCPs, no geotransform), and a nodata value the catalog declares but the file
does not (GDAL's resampling would then blend nodata into valid neighbours). Reading headers costs
one small request per asset, done in parallel.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import urlsplit

import numpy as np
import rasterio
from affine import Affine

from kernel.errors import CatalogError
from pipeline.object_store import gdal_s3_env

# Remote reads retry like catalog searches do (catalogs/http.py): GDAL retries 429/5xx with
# exponential backoff from RETRY_DELAY seconds. S3 reads accept requester-pays buckets (Earth Search's
# Sentinel-1 GRD, s3://sentinel-s1-l1c), billed to the reader's AWS credentials, which GDAL takes from
# the reading process's environment (never from here). Local files never touch these settings.
RETRY_ENV = {
    "GDAL_HTTP_MAX_RETRY": "5",
    "GDAL_HTTP_RETRY_DELAY": "0.5",
    "GDAL_HTTP_TIMEOUT": "60",
    "AWS_REQUEST_PAYER": "requester",
}
# Opening a remote file probes for sidecar files unless told not to (7 requests a tile saved).
NO_SIDECARS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR"}


def read_env() -> dict[str, str]:
    """GDAL's settings for reading assets: the retries, and an S3-compatible server's endpoint
    (AWS_ENDPOINT_URL), read from the environment when a read is set up."""
    return {**RETRY_ENV, **gdal_s3_env()}


S3_ADVICE = (
    "s3:// assets are read with your AWS credentials (AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) "
    "and, for an S3-compatible server, AWS_ENDPOINT_URL"
)

# URL schemes whose files GDAL reads through a virtual file system, and that system's prefix.
VSI_PREFIXES = {
    "http": "/vsicurl/",
    "https": "/vsicurl/",
    "ftp": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
    "oss": "/vsioss/",
}


@dataclass(frozen=True)
class AssetHeader:
    """What the file itself says, including its own grid (what GDAL warps from, and what decides
    whether tiles share a lattice for a mosaic), so no later step opens the file again."""

    nodata: float | None
    radar_geometry: bool  # GCPs but no geotransform
    count: int
    dtype: str
    crs_wkt: str = ""  # "" where the file has no CRS
    epsg: int | None = None
    transform: Affine = Affine.identity()
    shape: tuple[int, int] = (0, 0)  # (height, width)


def read_header(href: str) -> AssetHeader:
    try:
        with rasterio.Env(**read_env()), rasterio.open(href) as src:
            radar = bool(src.gcps[0]) and src.transform == Affine.identity()
            wkt, epsg = (src.crs.to_wkt(), src.crs.to_epsg()) if src.crs else ("", None)
            return AssetHeader(
                src.nodata, radar, src.count, src.dtypes[0], wkt, epsg, src.transform, (src.height, src.width)
            )
    except rasterio.errors.RasterioIOError as e:
        advice = f"; {S3_ADVICE}" if urlsplit(href).scheme.lower() == "s3" else ""
        raise CatalogError(f"cannot open asset {href}: {e}{advice}") from None


def read_headers(hrefs: Iterable[str], workers: int = 8) -> dict[str, AssetHeader]:
    unique = list(dict.fromkeys(hrefs))
    with ThreadPoolExecutor(max_workers=min(workers, max(1, len(unique)))) as pool:
        return dict(zip(unique, pool.map(read_header, unique)))


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return a == b or (math.isnan(a) and math.isnan(b))


def _representable(value: float, dtype: str) -> bool:
    """Whether `value` can be a nodata of `dtype` (GDAL would turn NaN on uint16 into 0)."""
    dt = np.dtype(dtype)
    if dt.kind == "f":
        return True
    if not math.isfinite(value) or value != int(value) or dt.kind not in "iu":
        return False
    info = np.iinfo(dt)
    return info.min <= value <= info.max


def effective_nodata(header: AssetHeader, declared: float | None) -> float | None:
    """The nodata a file is read with: the catalog's where the file's type can hold it, else the
    file's own (a catalog value the type cannot hold is a catalog error)."""
    if declared is not None and _representable(declared, header.dtype):
        return declared
    return header.nodata


def vsi_path(href: str) -> str:
    """The GDAL file name of an asset href, for places where GDAL reads it itself (a `vrt://` connection, a
    VRT source): URLs through their virtual file system (`https://h/a.tif` -> `/vsicurl/https://h/a.tif`,
    `s3://b/a.tif` -> `/vsis3/b/a.tif`), `file://` URLs as paths; anything else is already a GDAL name."""
    parts = urlsplit(href)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return parts.path
    if scheme in ("http", "https", "ftp"):
        return VSI_PREFIXES[scheme] + href
    if scheme in VSI_PREFIXES:
        query = f"?{parts.query}" if parts.query else ""
        return f"{VSI_PREFIXES[scheme]}{parts.netloc}{parts.path}{query}"
    return href


def gdal_href(href: str, header: AssetHeader, declared_nodata: float | None) -> str:
    """The href GDAL should open: wrapped in a `vrt://` connection that sets the catalog's nodata
    when the file's header lacks it or disagrees, so resampling excludes those pixels."""
    nodata = effective_nodata(header, declared_nodata)
    if _same(nodata, header.nodata):
        return href
    path = vsi_path(href)
    if "?" in path:
        # a signed URL: vrt:// cannot carry a second query string; the exact-value mask applied after
        # resampling still removes pure nodata pixels, only their bilinear fringe stays blended
        return href
    return f"vrt://{path}?a_nodata={nodata!r}"
