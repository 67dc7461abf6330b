"""A real STAC API on 127.0.0.1 for the demo and the tests: `rustac serve` run as a subprocess.

Why rustac: it is a standards-compliant STAC API (core, item-search, features, paging), keeps items
in memory, installs from PyPI with no Docker or database, and answers within about 0.1 s of starting.
Its known limit: only POST /search is reliable (GET /search with `limit` answers 500), which is what
pystac-client uses by default and what `catalogs.http` always sends.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable
from pathlib import Path

import pystac

from kernel.errors import CatalogError

_STRUCTURAL_RELS = {"root", "parent", "child", "item", "self", "collection", "items"}
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class LocalStacServer:
    """A running `rustac serve` process; stop it with `.stop()` or by leaving a `with` block.

    It runs in its own session (a terminal's Ctrl-C does not reach it), so whoever started it stops
    it: `.stop()`, the `with` block, or at the latest interpreter exit (the finalizer is atexit-bound;
    `dsmar` turns SIGTERM into an orderly exit so that runs too).
    """

    def __init__(self, process: subprocess.Popen, url: str, workdir: tempfile.TemporaryDirectory):
        self.process = process
        self.url = url
        self._workdir = workdir
        self._finalizer = weakref.finalize(self, _terminate, process, workdir)

    def stop(self) -> None:
        """Terminate the server and remove its working files; safe to call twice."""
        self._finalizer()

    def __enter__(self) -> LocalStacServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"LocalStacServer({self.url!r}, pid={self.process.pid})"


def serve_static_catalog(catalog_json: Path | str, startup_timeout: float = 15.0) -> LocalStacServer:
    """Serve every collection and item of a static pystac catalog through a local STAC API."""
    path = Path(catalog_json)
    if not path.is_file():
        raise CatalogError(f"no static catalog at {path}")
    try:
        catalog = pystac.Catalog.from_file(str(path))
        collections = list(catalog.get_all_collections())
        items = list(catalog.get_items(recursive=True))
    except Exception as err:  # pystac raises many types for a broken catalog
        raise CatalogError(f"could not read the static catalog {path}: {err}") from err
    if not collections:
        raise CatalogError(f"the static catalog {path} has no collections to serve")
    return serve_items(collections, items, startup_timeout=startup_timeout)


def serve_items(
    collections: Iterable[pystac.Collection | dict],
    items: Iterable[pystac.Item | dict],
    startup_timeout: float = 15.0,
) -> LocalStacServer:
    """Serve the given collections and items (each item names its collection) on a free local port."""
    workdir = tempfile.TemporaryDirectory(prefix="dsmar-stac-")
    root = Path(workdir.name)
    collection_dicts = [_collection_dict(c) for c in collections]
    known = {c["id"] for c in collection_dicts}
    by_collection: dict[str, list[dict]] = {cid: [] for cid in known}
    for item in items:
        record = _item_dict(item)
        cid = record.get("collection")
        if cid not in known:
            workdir.cleanup()
            raise CatalogError(f"item {record.get('id')!r} names collection {cid!r}, which is not being served")
        by_collection[cid].append(record)
    hrefs = []
    for n, collection in enumerate(collection_dicts):
        collection_path = root / f"collection-{n}.json"
        collection_path.write_text(json.dumps(collection))
        hrefs.append(str(collection_path))
        if by_collection[collection["id"]]:
            items_path = root / f"items-{n}.json"
            items_path.write_text(
                json.dumps({"type": "FeatureCollection", "features": by_collection[collection["id"]]})
            )
            hrefs.append(str(items_path))
    try:
        return _start(hrefs, workdir, startup_timeout)
    except BaseException:
        workdir.cleanup()
        raise


def _rustac_executable() -> str:
    beside_python = Path(sys.executable).with_name("rustac")
    if beside_python.is_file():
        return str(beside_python)
    found = shutil.which("rustac")
    if found is None:
        raise CatalogError("the `rustac` command was not found; install it with `pip install rustac`")
    return found


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(hrefs: list[str], workdir: tempfile.TemporaryDirectory, timeout: float) -> LocalStacServer:
    executable = _rustac_executable()
    log_path = Path(workdir.name) / "rustac.log"
    last_error = ""
    for _attempt in range(3):  # another process may grab the port between picking and binding it
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [executable, "serve", "--addr", f"127.0.0.1:{port}", *hrefs],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                # Its own session: a terminal's Ctrl-C reaches the whole foreground group, and the
                # server must outlive the interrupt until the CLI has unwound and stops it in order.
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if _answers(url):
                return LocalStacServer(process, url, workdir)
            time.sleep(0.05)
        else:
            _terminate(process, None)
            raise CatalogError(f"rustac serve did not answer on {url} within {timeout:g} s: {_tail(log_path)}")
        last_error = _tail(log_path)
        if "in use" not in last_error.lower():
            break
    raise CatalogError(f"rustac serve exited before answering: {last_error}")


def _answers(url: str) -> bool:
    try:
        with _NO_PROXY.open(url + "/", timeout=1) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _tail(path: Path, lines: int = 5) -> str:
    text = path.read_text(errors="replace").strip() if path.exists() else ""
    return " | ".join(text.splitlines()[-lines:]) or "(no output)"


def _terminate(process: subprocess.Popen, workdir: tempfile.TemporaryDirectory | None) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if workdir is not None:
        workdir.cleanup()


def _strip_links(links: list[dict]) -> list[dict]:
    return [link for link in links if link.get("rel") not in _STRUCTURAL_RELS]


def _collection_dict(collection: pystac.Collection | dict) -> dict:
    record = (
        collection.to_dict(include_self_link=False, transform_hrefs=False)
        if isinstance(collection, pystac.Collection)
        else dict(collection)
    )
    record["links"] = _strip_links(record.get("links", []))
    return record


def _item_dict(item: pystac.Item | dict) -> dict:
    """An item as the server should hold it: no catalog links, asset hrefs as absolute URLs."""
    if isinstance(item, pystac.Item):
        item = item.clone()
        item.make_asset_hrefs_absolute()
        record = item.to_dict(include_self_link=False, transform_hrefs=False)
        record["collection"] = item.collection_id
    else:
        record = json.loads(json.dumps(item))
    record["links"] = _strip_links(record.get("links", []))
    for asset in record.get("assets", {}).values():
        asset["href"] = _as_url(asset["href"])
    return record


def _as_url(href: str) -> str:
    """pystac-client turns a scheme-less path into a URL on the API host, so local paths become file:// URLs."""
    if "://" in href:
        return href
    return Path(href).resolve().as_uri()
