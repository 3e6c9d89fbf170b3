"""The artifact store: one contract (:mod:`.base`), a directory and S3-compatible storage behind it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Store, blob_key, is_digest, pack_key
from .fs import FileStore

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["FileStore", "Store", "blob_key", "is_digest", "open_store", "pack_key"]


def open_store(settings: Settings) -> Store:
    """The store ``AIAAS_STORE_URL`` names: ``s3://bucket/prefix``, ``file:///path``, or (unset)
    ``<data dir>/store``."""
    url = settings.store_url
    if not url:
        return FileStore(settings.data_dir / "store")
    if url.startswith("file://"):
        from urllib.parse import urlparse
        from pathlib import Path

        return FileStore(Path(urlparse(url).path))
    if url.startswith("s3://"):
        from .s3 import S3Store

        store = S3Store(url, endpoint_url=settings.s3_endpoint_url, access_key_id=settings.s3_access_key_id,
                        secret_access_key=settings.s3_secret_access_key, region=settings.s3_region)
        store.ensure_bucket()
        return store
    raise ValueError(f"AIAAS_STORE_URL must start with s3:// or file://, got {url!r}")
