"""Reads over HTTP survive a flaky server: GDAL retries 429/503 as configured in pipeline.load."""

from __future__ import annotations

import multiprocessing
import socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pystac

from pipeline.load import load_stack
from tests.load_cases import OPTICAL_GRID, make_item, proj_fields, roundtrip, write_tif


class FlakyRangeServer:
    """Serves files from `root` with HTTP Range support; every other request first answers 503.

    It runs in its own process: GDAL holds the GIL while it reads, so an in-process server would
    never answer.
    """

    def __init__(self, root: Path):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        ctx = multiprocessing.get_context("fork")
        self.counts = ctx.Array("i", 2)  # requests, failures
        self.process = ctx.Process(target=_serve, args=(root, self.port, self.counts), daemon=True)
        self.process.start()
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                break
            except OSError:
                self.process.join(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def failed(self) -> int:
        return self.counts[1]

    def shutdown(self) -> None:
        self.process.terminate()
        self.process.join()


def _serve(root: Path, port: int, counts) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
    server.root, server.counts = root, counts  # type: ignore[attr-defined]
    server.serve_forever()


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        server = self.server
        with server.counts.get_lock():
            server.counts[0] += 1
            fail = server.counts[0] % 2 == 1
            server.counts[1] += fail
        if fail:
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        data = (server.root / self.path.lstrip("/")).read_bytes()
        start, end = 0, len(data) - 1
        if rng := self.headers.get("Range"):
            first, last = rng.removeprefix("bytes=").split("-")
            start, end = int(first), min(int(last) if last else end, end)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        if body:
            self.wfile.write(data[start : end + 1])


def test_http_reads_retry_through_503s(tmp_path):
    values = np.random.default_rng(3).normal(size=OPTICAL_GRID.shape).astype(np.float32)
    path = write_tif(tmp_path / "dem.tif", values, 32632, OPTICAL_GRID.affine)
    local = roundtrip(
        make_item("dem", {"data": dict(href=path, **proj_fields(OPTICAL_GRID.affine, OPTICAL_GRID.shape))}, 32632)
    )
    server = FlakyRangeServer(tmp_path)
    try:
        remote = pystac.Item.from_dict(local.to_dict())
        remote.assets["data"].href = f"{server.url}/dem.tif"
        out = load_stack([remote], {"elevation": "data"}, OPTICAL_GRID).values[0]
    finally:
        server.shutdown()
    np.testing.assert_array_equal(out, values)
    assert server.failed >= 2  # the header read and the pixel read both met a 503 and retried
