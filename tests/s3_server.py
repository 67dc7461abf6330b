"""A real S3-compatible server on loopback (moto in server mode) and the environment that points dsmar at it.

The environment is what an operator sets for MinIO or any S3-compatible store: credentials, AWS_ENDPOINT_URL
and AWS_REGION. Processes started while it is set (Dask workers) inherit it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

SECRET = "dsmar-test-secret-0123456789abcdef"  # a value to look for where no secret may appear
CLEARED = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_CONFIG_FILE")


@dataclass(frozen=True)
class S3Server:
    endpoint: str
    bucket: str

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1")

    def objects(self, prefix: str) -> dict[str, str]:
        """key -> ETag of every object under `prefix` in the bucket."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {o["Key"]: o["ETag"] for page in pages for o in page.get("Contents", [])}


@contextmanager
def s3_server(bucket: str = "dsmar-test") -> Iterator[S3Server]:
    """moto's S3 on 127.0.0.1 (a free port) with one bucket, and the AWS_* environment for it while the block runs."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    try:
        with pytest.MonkeyPatch.context() as env:
            for name in CLEARED:
                env.delenv(name, raising=False)
            env.setenv("AWS_ACCESS_KEY_ID", "dsmar-test-key")
            env.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
            env.setenv("AWS_ENDPOINT_URL", endpoint)
            env.setenv("AWS_REGION", "us-east-1")
            env.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
            s3 = S3Server(endpoint, bucket)
            s3.client().create_bucket(Bucket=bucket)
            yield s3
    finally:
        server.stop()
