"""``Dataset`` and ``AsyncDataset``: a handle on one version of a dataset (see ``_datasets``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ._datasets import UploadResult, delete_dataset
from .wire_datasets import DatasetPublic

if TYPE_CHECKING:
    from ._async_client import AsyncClient
    from ._client import Client



def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


class _DatasetBase:
    def __init__(self, data: DatasetPublic, result: UploadResult | None = None) -> None:
        self.data = data
        #: Chunks and bytes this upload sent (None for a dataset looked up, not uploaded).
        self.sent_chunks = result.sent_chunks if result else None
        self.sent_bytes = result.sent_bytes if result else None

    name = property(lambda self: self.data.name)
    version = property(lambda self: self.data.version)
    files = property(lambda self: self.data.files, doc="how many files the version holds")
    bytes = property(lambda self: self.data.bytes, doc="their total size")

    @property
    def ref(self) -> str:
        """``NAME:VERSION``: what ``datasets=[...]`` pins."""
        return f"{self.data.name}:{self.data.version}"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.ref} files={self.files} bytes={self.bytes}>"

    def _summary(self) -> str:
        d = self.data
        text = f"Dataset {self.ref} · {d.files} files · {_human(d.bytes)} · {d.created_at:%Y-%m-%d %H:%M:%S}"
        if self.sent_chunks is not None:
            text += (f"\nsent {self.sent_chunks} chunks ({_human(self.sent_bytes or 0)} of {_human(d.bytes)}); "
                     "the backend had the rest")
        return text

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return {"text/plain": self._summary()}


class Dataset(_DatasetBase):
    """One version of a dataset on the backend. ``client.upload`` returns one."""

    def __init__(self, client: Client, data: DatasetPublic, result: UploadResult | None = None) -> None:
        super().__init__(data, result)
        self._client = client

    def delete(self) -> None:
        """Delete this version (refused while a queued or running run reads it)."""
        self._client._drive(delete_dataset(self.name, self.version))


class AsyncDataset(_DatasetBase):
    """The async twin of :class:`Dataset`."""

    def __init__(self, client: AsyncClient, data: DatasetPublic, result: UploadResult | None = None) -> None:
        super().__init__(data, result)
        self._client = client

    async def delete(self) -> None:
        await self._client._drive(delete_dataset(self.name, self.version))


def refs(datasets: list[Any] | None) -> list[str]:
    """``datasets=[...]`` as the backend reads it: names, ``NAME:VERSION``s, or Dataset objects."""
    out = []
    for item in datasets or []:
        if isinstance(item, _DatasetBase):
            out.append(item.ref)
        elif isinstance(item, str):
            out.append(item)
        else:
            raise TypeError(f"datasets=[...] takes names ('pets', 'pets:2') or Dataset objects, not {item!r}")
    return out


class DatasetList(list):  # type: ignore[type-arg]
    """``client.datasets()``: a list that prints as a table."""

    _COLUMNS = ("name", "version", "files", "size", "created")

    def _rows(self) -> Iterator[tuple[str, ...]]:
        for ds in self:
            yield (ds.name, str(ds.version), str(ds.files), _human(ds.bytes), f"{ds.data.created_at:%Y-%m-%d %H:%M}")

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        rows = [self._COLUMNS, *self._rows()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(self._COLUMNS))]
        printer.text("\n".join("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows))
