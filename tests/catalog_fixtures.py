"""Look-alike Earth Search and Planetary Computer items with tiny local COGs, and the servers tests put
in front of them: a fault-injecting HTTP proxy and a Planetary Computer SAS token API.

Items copy the real catalogs' shapes (ids, asset keys, extensions, properties, as seen on
earth-search.aws.element84.com/v1 and planetarycomputer.microsoft.com/api/stac/v1 in 2024); only the
hrefs differ: `file://` URLs of 16 x 16 COGs written here, georeferenced like the real assets.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
import zlib
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import rasterio
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from rasterio.transform import from_bounds

Bounds = tuple[float, float, float, float]
UTM_EPSG = 32633  # scenes near 15 E; all footprints in these tests stay inside zone 33
SIZE = 16

EXT = "https://stac-extensions.github.io"
EXTENSIONS = {
    "eo": f"{EXT}/eo/v1.1.0/schema.json",
    "proj": f"{EXT}/projection/v1.1.0/schema.json",
    "raster": f"{EXT}/raster/v1.1.0/schema.json",
    "sar": f"{EXT}/sar/v1.0.0/schema.json",
    "sat": f"{EXT}/sat/v1.0.0/schema.json",
    "view": f"{EXT}/view/v1.0.0/schema.json",
    "mgrs": f"{EXT}/mgrs/v1.0.0/schema.json",
    "grid": f"{EXT}/grid/v1.0.0/schema.json",
    "processing": f"{EXT}/processing/v1.1.0/schema.json",
    "file": f"{EXT}/file/v2.1.0/schema.json",
}
COG = "image/tiff; application=geotiff; profile=cloud-optimized"
S2_BANDS = {  # Earth Search key, Planetary Computer key, common name, centre wavelength
    "blue": ("B02", 0.49),
    "green": ("B03", 0.56),
    "red": ("B04", 0.665),
    "nir": ("B08", 0.842),
}


class CogWriter:
    """Writes each distinct tiny COG once under `root` and returns its file:// URL."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._written: dict[str, str] = {}

    def write(self, name: str, bounds: Bounds, epsg: int | None, dtype: str, nodata) -> tuple[str, list[float]]:
        """(href, proj:transform as 6 numbers) of a SIZE x SIZE COG covering `bounds` in `epsg` (GCPs in lon/lat when None)."""
        transform = from_bounds(*bounds, SIZE, SIZE)
        path = self.root / f"{name}.tif"
        if name not in self._written:
            rng = np.random.default_rng(zlib.crc32(name.encode()))
            if np.dtype(dtype).kind == "u":
                data = rng.integers(1000, 4000, (1, SIZE, SIZE)).astype(dtype)
            else:
                data = rng.uniform(0.01, 0.5, (1, SIZE, SIZE)).astype(dtype)
            profile = dict(driver="COG", width=SIZE, height=SIZE, count=1, dtype=dtype, nodata=nodata)
            if epsg is not None:
                profile.update(crs=f"EPSG:{epsg}", transform=transform)
            else:  # radar geometry, as a GRD: only ground control points tie pixels to lon/lat `bounds`
                w, s, e, n = bounds
                corners = [(0, 0, w, n), (0, SIZE, e, n), (SIZE, SIZE, e, s), (SIZE, 0, w, s)]
                profile.update(gcps=[GroundControlPoint(r, c, x, y) for r, c, x, y in corners], crs="EPSG:4326")
            with rasterio.open(path, "w", **profile) as dst:
                dst.write(data)
            self._written[name] = path.as_uri()
        return self._written[name], list(transform)[:6]


def polygon(bounds: Bounds) -> dict:
    w, s, e, n = bounds
    return {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}


def utm_bounds(bounds: Bounds, epsg: int = UTM_EPSG) -> Bounds:
    to_utm = Transformer.from_crs(4326, epsg, always_xy=True)
    w, s, e, n = bounds
    xs, ys = to_utm.transform([w, e, e, w], [s, s, n, n])
    return (round(min(xs), -1), round(min(ys), -1), round(max(xs), -1), round(max(ys), -1))


def iso(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def collection(cid: str, description: str, extensions: tuple[str, ...] = ()) -> dict:
    return {
        "type": "Collection",
        "stac_version": "1.0.0",
        "stac_extensions": [EXTENSIONS[e] for e in extensions],
        "id": cid,
        "title": cid,
        "description": description,
        "license": "proprietary",
        "extent": {
            "spatial": {"bbox": [[-180, -90, 180, 90]]},
            "temporal": {"interval": [["2014-10-10T00:00:00Z", None]]},
        },
        "links": [],
    }


def _feature(
    item_id: str, cid: str, bounds: Bounds, properties: dict, assets: dict, extensions: tuple[str, ...]
) -> dict:
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": [EXTENSIONS[e] for e in extensions],
        "id": item_id,
        "collection": cid,
        "geometry": polygon(bounds),
        "bbox": list(bounds),
        "properties": properties,
        "assets": assets,
        "links": [],
    }


def _s2_assets(cogs: CogWriter, bounds: Bounds, earth_search: bool, epsg: int = UTM_EPSG) -> dict:
    """Sentinel-2 10 m band assets as Earth Search (blue.., BOA offset in raster:bands) or the Planetary Computer (B02..) spell them."""
    ub = utm_bounds(bounds, epsg)
    assets = {}
    for name, (pc_key, wavelength) in S2_BANDS.items():
        key = name if earth_search else pc_key
        band = pc_key[1:].lstrip("0")
        href, transform = cogs.write(
            f"{'es' if earth_search else 'pc'}-s2-{epsg}-{'_'.join(map(str, bounds))}-{key}", ub, epsg, "uint16", 0
        )
        asset = {
            "href": href,
            "type": COG,
            "eo:bands": [{"name": key, "common_name": name, "center_wavelength": wavelength}],
            "gsd": 10,
            "proj:shape": [SIZE, SIZE],
            "proj:transform": transform,
        }
        if earth_search:
            asset["title"] = f"{name.title()} (band {band}) - 10m"
            asset["raster:bands"] = [
                {
                    "nodata": 0,
                    "data_type": "uint16",
                    "bits_per_sample": 15,
                    "spatial_resolution": 10,
                    "scale": 0.0001,
                    "offset": -0.1,
                }
            ]
            asset["roles"] = ["data", "reflectance"]
        else:
            asset["title"] = f"Band {band} - {name.title()} - 10m"
            asset["proj:bbox"] = list(ub)
            asset["roles"] = ["data"]
        assets[key] = asset
    return assets


def earth_search_s2(
    cogs: CogWriter,
    item_id: str,
    when: datetime,
    bounds: Bounds,
    cloud: float | None,
    collection_id: str = "sentinel-2-l2a",
    epsg: int = UTM_EPSG,
) -> dict:
    """An Earth Search v1 `sentinel-2-l2a` item in UTM `epsg`: keys blue/green/red/nir, BOA offset in raster:bands."""
    assets = _s2_assets(cogs, bounds, True, epsg)
    properties = {
        "datetime": iso(when),
        "created": iso(when + timedelta(hours=3)),
        "platform": "sentinel-2a",
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "proj:epsg": epsg,
        "mgrs:utm_zone": epsg % 100,
        "mgrs:latitude_band": "T",
        "mgrs:grid_square": "WL",
        "grid:code": "MGRS-33TWL",
        "view:sun_azimuth": 150.2,
        "view:sun_elevation": 62.4,
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": "05.10",
        "s2:nodata_pixel_percentage": 0.0,
        "processing:software": {"sentinel2-to-stac": "0.1.1"},
        "earthsearch:boa_offset_applied": True,
    }
    if cloud is not None:
        properties["eo:cloud_cover"] = cloud
    return _feature(
        item_id,
        collection_id,
        bounds,
        properties,
        assets,
        ("eo", "proj", "raster", "mgrs", "grid", "view", "processing"),
    )


def earth_search_s1_grd(cogs: CogWriter, item_id: str, when: datetime, bounds: Bounds, orbit_state: str) -> dict:
    """An Earth Search `sentinel-1-grd` item: assets in radar geometry, no proj fields (GCPs only)."""
    assets = {}
    for key in ("vv", "vh"):
        href, _ = cogs.write(f"es-grd-{item_id}-{key}", bounds, None, "uint16", 0)
        assets[key] = {"href": href, "type": "image/tiff; application=geotiff", "title": key.upper(), "roles": ["data"]}
    properties = {
        "datetime": iso(when),
        "platform": "sentinel-1a",
        "constellation": "sentinel-1",
        "instruments": ["c-sar"],
        "sar:instrument_mode": "IW",
        "sar:frequency_band": "C",
        "sar:center_frequency": 5.405,
        "sar:polarizations": ["VV", "VH"],
        "sar:product_type": "GRD",
        "sar:resolution_range": 20,
        "sar:resolution_azimuth": 22,
        "sar:pixel_spacing_range": 10,
        "sar:pixel_spacing_azimuth": 10,
        "sar:looks_equivalent_number": 4.4,
        "sat:orbit_state": orbit_state,
        "sat:absolute_orbit": 54321,
        "sat:relative_orbit": 22,
    }
    return _feature(item_id, "sentinel-1-grd", bounds, properties, assets, ("sar", "sat"))


def pc_s2(cogs: CogWriter, item_id: str, when: datetime, bounds: Bounds, cloud: float | None) -> dict:
    """A Planetary Computer `sentinel-2-l2a` item: keys B02..B08, offset not in metadata (baseline 05.10)."""
    assets = _s2_assets(cogs, bounds, earth_search=False)
    properties = {
        "datetime": iso(when),
        "platform": "Sentinel-2A",
        "constellation": "Sentinel 2",
        "instruments": ["msi"],
        "proj:epsg": UTM_EPSG,
        "s2:mgrs_tile": "33TWL",
        "s2:product_type": "S2MSI2A",
        "s2:processing_baseline": "05.10",
        "sat:orbit_state": "descending",
        "sat:relative_orbit": 22,
    }
    if cloud is not None:
        properties["eo:cloud_cover"] = cloud
    return _feature(item_id, "sentinel-2-l2a", bounds, properties, assets, ("eo", "sat", "proj"))


def pc_s1_rtc(
    cogs: CogWriter, item_id: str, when: datetime, bounds: Bounds, orbit_state: str, platform: str = "SENTINEL-1A"
) -> dict:
    """A Planetary Computer `sentinel-1-rtc` item: terrain-corrected gamma0 (linear), UTM, proj on the item."""
    ub = utm_bounds(bounds)
    assets = {}
    transform = None
    for key in ("vv", "vh"):
        href, transform = cogs.write(f"pc-rtc-{'_'.join(map(str, bounds))}-{key}", ub, UTM_EPSG, "float32", -32768.0)
        assets[key] = {
            "href": href,
            "type": COG,
            "title": f"{key.upper()}: vertical transmit, {'vertical' if key == 'vv' else 'horizontal'} receive",
            "raster:bands": [{"nodata": -32768, "data_type": "float32", "spatial_resolution": 10.0}],
            "roles": ["data"],
        }
    properties = {
        "datetime": iso(when),
        "start_datetime": iso(when - timedelta(seconds=12)),
        "end_datetime": iso(when + timedelta(seconds=12)),
        "platform": platform,
        "constellation": "Sentinel-1",
        "instruments": ["c-sar"],
        "proj:epsg": UTM_EPSG,
        "proj:bbox": list(ub),
        "proj:shape": [SIZE, SIZE],
        "proj:transform": transform,
        "sar:product_type": "RTC",
        "sar:polarizations": ["VV", "VH"],
        "sar:instrument_mode": "IW",
        "sar:frequency_band": "C",
        "sar:center_frequency": 5.405,
        "sar:resolution_range": 20,
        "sar:resolution_azimuth": 22,
        "sar:pixel_spacing_range": 10,
        "sar:pixel_spacing_azimuth": 10,
        "sat:orbit_state": orbit_state,
        "sat:relative_orbit": 22 if orbit_state == "descending" else 117,
        "sat:absolute_orbit": 54321,
    }
    return _feature(item_id, "sentinel-1-rtc", bounds, properties, assets, ("sar", "sat", "proj", "raster"))


def cop_dem(cogs: CogWriter, lon: int, lat: int) -> dict:
    """A `cop-dem-glo-30` 1 x 1 degree tile (same shape on Earth Search and the Planetary Computer)."""
    bounds = (float(lon), float(lat), float(lon + 1), float(lat + 1))
    ns, ew = "N" if lat >= 0 else "S", "E" if lon >= 0 else "W"
    item_id = f"Copernicus_DSM_COG_10_{ns}{abs(lat):02d}_00_{ew}{abs(lon):03d}_00_DEM"
    href, transform = cogs.write(f"dem-{item_id}", bounds, 4326, "float32", None)
    assets = {
        "data": {
            "href": href,
            "type": COG,
            "title": item_id,
            "raster:bands": [{"data_type": "float32", "spatial_resolution": 30, "sampling": "point"}],
            "roles": ["data"],
        }
    }
    properties = {
        "datetime": "2021-04-22T00:00:00Z",
        "platform": "TanDEM-X",
        "gsd": 30,
        "proj:epsg": 4326,
        "proj:shape": [SIZE, SIZE],
        "proj:transform": transform,
    }
    return _feature(item_id, "cop-dem-glo-30", bounds, properties, assets, ("proj", "raster"))


class _Server:
    """A ThreadingHTTPServer on a free local port, run in a daemon thread; a context manager."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.httpd.owner = self
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class FaultyProxy(_Server):
    """Forwards to `upstream`, answering the first requests with scripted faults.

    Faults, consumed one per request in order: `"429:S"` (Too Many Requests, Retry-After S seconds),
    `"503"`, `"slow:S"` (sleep S seconds, then forward), `"ok"`. When the script runs out, every
    request is forwarded, or answered 503 if `always_fail`. Upstream URLs in bodies (pagination links)
    are rewritten to the proxy's URL so every page passes through it.
    """

    def __init__(self, upstream: str, faults: list[str] | None = None, always_fail: bool = False):
        self.upstream = upstream.rstrip("/")
        self.faults = list(faults or [])
        self.always_fail = always_fail
        self.log: list[tuple[str, str, str]] = []  # (method, path, what the proxy did)
        self._lock = threading.Lock()
        super().__init__(_ProxyHandler)

    def next_fault(self) -> str:
        with self._lock:
            if self.faults:
                return self.faults.pop(0)
            return "503" if self.always_fail else "ok"


class _ProxyHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        proxy: FaultyProxy = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if self.command == "POST" else None
        fault = proxy.next_fault()
        proxy.log.append((self.command, self.path, fault))
        if fault.startswith("429"):
            self._reply(429, b'{"code":"TooManyRequests"}', {"Retry-After": fault.split(":")[1]})
            return
        if fault == "503":
            self._reply(503, b'{"code":"ServiceUnavailable"}')
            return
        if fault.startswith("slow:"):
            time.sleep(float(fault.split(":")[1]))
        request = urllib.request.Request(proxy.upstream + self.path, data=body, method=self.command)
        request.add_header("Content-Type", self.headers.get("Content-Type", "application/json"))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(request, timeout=10) as response:
                status, payload = response.status, response.read()
        except urllib.error.HTTPError as err:
            status, payload = err.code, err.read()
        payload = payload.replace(proxy.upstream.encode(), proxy.url.encode())
        self._reply(status, payload)

    def _reply(self, status: int, payload: bytes, headers: dict | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up on a slow response, as it should


class SasTokenServer(_Server):
    """The Planetary Computer token API's shape: GET /api/sas/v1/token/{collection}."""

    def __init__(self, lifetime_s: float = 3600.0, faults: tuple[int, ...] = ()):
        self.lifetime_s = lifetime_s
        self.faults = list(faults)  # HTTP statuses answered, in order, before the first token
        self.requests: list[str] = []
        super().__init__(_TokenHandler)

    @property
    def token_url(self) -> str:
        return f"{self.url}/api/sas/v1/token"


class _TokenHandler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        server: SasTokenServer = self.server.owner
        prefix = "/api/sas/v1/token/"
        if not self.path.startswith(prefix):
            self.send_error(404)
            return
        collection_id = self.path[len(prefix) :]
        server.requests.append(collection_id)
        if server.faults:
            self.send_error(server.faults.pop(0))
            return
        expiry = datetime.now(UTC) + timedelta(seconds=server.lifetime_s)
        body = json.dumps(
            {
                "msr:expiry": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "token": f"st=2026-11-26&se={expiry:%Y-%m-%dT%H%M%SZ}&sp=rl&sv=2024-05-04&sr=c&sig=n{len(server.requests)}",
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
