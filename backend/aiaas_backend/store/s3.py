"""S3-compatible object storage (AWS S3, MinIO, SeaweedFS, Ceph, R2...) through boto3.

Why boto3: it is the reference client, maintained by AWS, speaks to every
S3-compatible server through ``endpoint_url``, streams uploads (multipart above
a threshold, with bounded buffers) and downloads, and has no event loop of its
own, which suits the API's thread-pool routes and the worker alike. obstore is
faster but young; fsspec/s3fs adds a filesystem layer (and aiobotocore) that
this key-value contract does not need.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, BinaryIO
from urllib.parse import urlparse

from .base import Store, check_key


class S3Store(Store):
    def __init__(
        self,
        url: str,
        *,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        region: str | None = None,
    ) -> None:
        try:
            import boto3
            from boto3.s3.transfer import TransferConfig
            from botocore.config import Config
        except ImportError:  # pragma: no cover - depends on the installation
            raise RuntimeError("AIAAS_STORE_URL=s3://... needs boto3: pip install 'aiaas[s3]'") from None
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"an S3 store URL looks like s3://BUCKET/PREFIX, got {url!r}")
        self.url = url.rstrip("/")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region or "us-east-1",
            # Path-style addressing: what self-hosted S3-compatible servers expect.
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 8, "mode": "standard"},
                          connect_timeout=10, read_timeout=60),
        )
        # Bounded memory: multipart parts of 8 MiB, a few at a time.
        self._transfer = TransferConfig(multipart_threshold=64 * 1024**2, multipart_chunksize=8 * 1024**2,
                                        max_concurrency=4)

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put(self, key: str, source: BinaryIO) -> int:
        counted = _Counting(source)
        self._client.upload_fileobj(counted, self.bucket, self._key(key), Config=self._transfer)
        return counted.count

    def open(self, key: str) -> BinaryIO:
        try:
            return self._client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self._client.exceptions.NoSuchKey:
            raise KeyError(key) from None

    def read_range(self, key: str, offset: int, size: int) -> bytes:
        if size <= 0:
            return b""
        try:
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(key),
                                           Range=f"bytes={offset}-{offset + size - 1}")["Body"]
        except self._client.exceptions.NoSuchKey:
            raise KeyError(key) from None
        with body:
            return body.read()

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def size(self, key: str) -> int:
        from botocore.exceptions import ClientError

        try:
            return int(self._client.head_object(Bucket=self.bucket, Key=self._key(key))["ContentLength"])
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise KeyError(key) from None
            raise

    def list(self, prefix: str = "") -> Iterator[str]:
        full = self._key(prefix.rstrip("/")) if prefix else (f"{self.prefix}/" if self.prefix else "")
        if prefix.endswith("/"):
            full += "/"
        strip = len(self.prefix) + 1 if self.prefix else 0
        for page in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", []):
                yield item["Key"][strip:]

    def delete(self, key: str) -> None:
        self._client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def ensure_bucket(self) -> None:
        """Create the bucket if it is missing (a fresh test server; a first start)."""
        from botocore.exceptions import ClientError

        try:
            self._client.head_bucket(Bucket=self.bucket)
        except ClientError:
            self._client.create_bucket(Bucket=self.bucket)


class _Counting:
    """A read-only stream that counts what passes through it."""

    def __init__(self, inner: BinaryIO) -> None:
        self._inner = inner
        self.count = 0

    def read(self, size: int = -1) -> Any:
        data = self._inner.read(size)
        self.count += len(data)
        return data
