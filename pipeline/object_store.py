"""Object storage (S3 and S3-compatible servers such as MinIO): how cubes and assets there are reached.

One place reads the environment. Credentials are never read here: s3fs (botocore) and GDAL each take
them from the environment of the process that reads (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_SESSION_TOKEN`, `AWS_PROFILE`, an instance role), so no secret is passed on, pickled for Dask
workers, logged or written into a cube. What is derived here is the endpoint of an S3-compatible
server (`AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`) and the region (`AWS_REGION`, else
`AWS_DEFAULT_REGION`), given to s3fs as storage options and to GDAL as its `/vsis3/` settings.
"""

from __future__ import annotations

import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import fsspec
from zarr.storage import FsspecStore

from kernel.errors import InputError

S3_SCHEMES = ("s3", "s3a")
ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
EXTRA = {"s3": "s3fs", "s3a": "s3fs"}  # the dsmar extra that brings each scheme's file system: its package


def scheme(url: str) -> str:
    """The URL's scheme, lower case; "" for a plain path."""
    return urlsplit(url).scheme.lower() if "://" in url else ""


def _first(names: tuple[str, ...]) -> str | None:
    return next((os.environ[n] for n in names if os.environ.get(n)), None)


def s3_endpoint() -> str | None:
    """The S3-compatible server's URL (`http://127.0.0.1:9000`), or None for AWS itself."""
    return _first(ENDPOINT_VARS)


def storage_options(url: str) -> dict[str, Any]:
    """fsspec storage options for `url`: the endpoint and region of an s3:// URL, nothing else.

    Listings are not cached: a run lists and writes the same prefixes, and a stale listing would hide
    what it wrote."""
    if scheme(url) not in S3_SCHEMES:
        return {}
    options: dict[str, Any] = {"use_listings_cache": False}
    endpoint, region = s3_endpoint(), _first(REGION_VARS)
    if endpoint:
        options["endpoint_url"] = endpoint
    if region:
        options["client_kwargs"] = {"region_name": region}
    return options


def gdal_s3_env() -> dict[str, str]:
    """GDAL's `/vsis3/` settings for an S3-compatible endpoint (host and port, http or https, path-style
    addressing); empty for AWS itself, where GDAL's defaults apply."""
    endpoint = s3_endpoint()
    if not endpoint:
        return {}
    parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return {
        "AWS_S3_ENDPOINT": parts.netloc,
        "AWS_HTTPS": "NO" if parts.scheme == "http" else "YES",
        "AWS_VIRTUAL_HOSTING": "FALSE",
    }


def require_filesystem(url: str) -> None:
    """Refuse in one line a URL whose file system is not installed (s3:// without s3fs: the `s3` extra)."""
    protocol = scheme(url)
    if not protocol or protocol == "file":
        return
    try:
        fsspec.get_filesystem_class(protocol)
    except ImportError as e:
        package = EXTRA.get(protocol)
        advice = f"install dsmar[s3] (pip install 'dsmar[s3]', which brings {package})" if package else str(e)
        raise InputError(f"{url}: {protocol}:// needs a file system that is not installed; {advice}") from None
    except ValueError:
        raise InputError(f"{url}: unknown URL scheme {protocol!r}; give a local path or an s3:// URL") from None


def filesystem(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The file system holding `url` and the path on it."""
    require_filesystem(url)
    return fsspec.core.url_to_fs(url, **storage_options(url))


def zarr_store(url: str, read_only: bool = False) -> FsspecStore:
    """A zarr store on a remote URL, opened with this environment's endpoint and region."""
    require_filesystem(url)
    return FsspecStore.from_url(url, storage_options=storage_options(url), read_only=read_only)


def check_reachable(url: str) -> None:
    """Prove this process can write where the cube at `url` lives (beside it: the cube itself may not
    exist yet) by writing and deleting a small probe; otherwise one InputError line naming the reason."""
    parent, _, name = url.rstrip("/").rpartition("/")
    probe = f"{parent or '.'}/.{name}.probe-{uuid.uuid4().hex[:12]}"
    try:
        fs, where = filesystem(probe)
        fs.pipe_file(where, b"")
        fs.rm_file(where)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001  (any failure means unreachable: missing bucket, credentials, network)
        raise InputError(f"cannot write beside {url}: {type(e).__name__}: {e}".rstrip(": ")) from None
