"""Wire schemas of datasets: manifests, uploads, versions and what a worker gets to
materialise them. Shared by the SDK and the backend like :mod:`aiaas_sdk.wire`."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .wire import UtcDatetime

DATASET_NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
_SHA256 = r"^[0-9a-f]{64}$"


def check_dataset_path(path: str) -> str:
    """A file's path inside a dataset: relative, ``/``-separated, no ``..``, no empty parts."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path or len(path) > 1024:
        raise ValueError(f"{path!r} is not a relative path inside the dataset (absolute, empty or odd)")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise ValueError(f"{path!r} leaves the dataset's folder or has an empty part ('..', '.', '//')")
    return path


# A manifest names thousands of digests: one compiled regex each.
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ManifestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str
    size: int = Field(ge=0)
    chunks: list[str] = Field(default_factory=list, description="SHA-256 hex digests of its chunks, in order")

    @model_validator(mode="after")
    def _valid(self) -> ManifestFile:
        check_dataset_path(self.path)
        for digest in self.chunks:
            if not _SHA256_HEX.fullmatch(digest):
                raise ValueError(f"{self.path}: {digest!r} is not a SHA-256 hex digest")
        return self


class DatasetManifest(BaseModel):
    """What a dataset version holds; immutable once committed."""

    model_config = ConfigDict(extra="forbid")

    files: list[ManifestFile] = Field(max_length=1_000_000)
    # Chunk sizes, so the server can check quota before a byte is sent (a version does not keep them).
    chunk_sizes: dict[str, int] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique(self) -> DatasetManifest:
        seen: set[str] = set()
        for f in self.files:
            if f.path in seen:
                raise ValueError(f"{f.path!r} appears twice in the manifest")
            seen.add(f.path)
        return self


class DatasetBase(BaseModel):
    """The version an upload's manifest is a change of: its number and its manifest's digest
    (the server refuses the upload, 409 ``base_mismatch``, if that version is gone or differs)."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    digest: str = Field(pattern=_SHA256)


class DatasetUploadCreate(BaseModel):
    """A new version: the whole ``manifest``, or with ``base`` only what changed from that
    version (files added or changed in ``manifest``, paths dropped in ``removed``). A re-upload
    of a folder of thousands of files then sends, checks and stores the few that changed."""

    model_config = ConfigDict(extra="forbid")

    manifest: DatasetManifest
    base: DatasetBase | None = None
    removed: list[str] = Field(default_factory=list, max_length=1_000_000)

    @model_validator(mode="after")
    def _delta(self) -> DatasetUploadCreate:
        if self.removed and self.base is None:
            raise ValueError("'removed' names paths of a base version: give 'base' too")
        changed = {f.path for f in self.manifest.files}
        for path in self.removed:
            check_dataset_path(path)
            if path in changed:
                raise ValueError(f"{path!r} is both in the manifest and in 'removed'")
        if len(set(self.removed)) != len(self.removed):
            raise ValueError("a path appears twice in 'removed'")
        return self


class SameHostUploadPublic(BaseModel):
    """A ticket for one connection to the backend's same-host upload socket (docs/datasets.md)."""

    socket: str = Field(description="path of the backend's Unix socket (SOCK_SEQPACKET), on its machine")
    ticket: str = Field(description="the first message on the socket; good for one connection within a minute")
    answer: str = Field(description="the socket's reply to the ticket: only this backend knows it")


class ChunkPublic(BaseModel):
    digest: str
    size: int
    stored: bool = Field(description="False when this user had already sent it (the PUT changed nothing)")


class ChunksPublic(BaseModel):
    received: int
    stored: int = Field(description="how many of them this user had not sent before")


class DatasetPublic(BaseModel):
    name: str
    version: int
    files: int
    bytes: int
    digest: str
    created_at: UtcDatetime


class DatasetUploadPublic(BaseModel):
    id: str
    name: str
    missing: list[str] = Field(description="digests of the chunks this user has not sent yet: PUT them")
    missing_bytes: int
    committed: DatasetPublic | None = Field(
        None, description="the version, when the upload was opened with commit=true and lacked no chunk: "
        "it is committed already (there is no upload to commit)")


class DatasetsPublic(BaseModel):
    data: list[DatasetPublic]
    count: int
    used_bytes: int = Field(description="bytes of chunks this user keeps (what the quota counts)")
    quota_bytes: int | None = None


class WorkerDataset(BaseModel):
    name: str
    version: int
    digest: str
    manifest: DatasetManifest


class WorkerDatasets(BaseModel):
    """What a worker needs to materialise its run's datasets into its node's cache."""

    datasets: list[WorkerDataset]
    cache_dir: str
    cache_bytes: int
