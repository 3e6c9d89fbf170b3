"""``client.upload()``, ``client.datasets()``, ``client.dataset()`` for ``Client`` and ``AsyncClient``.

The operations are ``_datasets``'s (free of I/O); these mixins drive them with the
client's ``_drive``, as ``_keys`` and ``_monitoring`` do for theirs.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import _datasets
from ._dataset import AsyncDataset, Dataset, DatasetList


class ClientDatasets:
    _drive: Any

    def upload(self, name: str, source: Any, *, parallel: int = 8, progress: bool = True,
               same_host: bool = True) -> Dataset:
        """Upload ``source`` as a new version of dataset ``name`` and return the :class:`Dataset`.

        ``source``: a folder, a file, a ``{path in the dataset: local file}`` mapping, a torch
        tensor, a numpy array or a pandas DataFrame. Only chunks the backend lacks travel,
        ``parallel`` at a time, read from disk as they go; calling again after an interruption
        resumes, and an unchanged source gives back the same version. ``progress`` shows a bar.
        ``same_host``: when the backend runs on this machine, hand it the files to read (open
        descriptors over its Unix socket) instead of sending their bytes over HTTP; False sends
        over HTTP always.
        """
        result = _datasets.upload(self, name, source, parallel=parallel, progress=progress, same_host=same_host)
        return Dataset(self, result.data, result)

    def datasets(self) -> list[Dataset]:
        """Every version of this user's datasets, by name, newest version first."""
        return DatasetList(Dataset(self, d) for d in self._drive(_datasets.list_datasets()).data)

    def dataset(self, name: str, version: int | None = None) -> Dataset:
        """Dataset ``name`` at ``version`` (the newest when None)."""
        return Dataset(self, self._drive(_datasets.get_dataset(name, version)))


class AsyncClientDatasets:
    _drive: Any
    url: str
    _api_key: str | None
    _timeout: float | None
    _tls_args: dict[str, Any]

    async def upload(self, name: str, source: Any, *, parallel: int = 8, progress: bool = True,
                     same_host: bool = True) -> AsyncDataset:
        """Async :meth:`Client.upload`. The upload's reads and hashing are blocking file work,
        so it runs in a thread, on its own connection pool, leaving the event loop free."""
        def work() -> _datasets.UploadResult:
            from ._client import Client  # the twin module imports this one

            with Client(self.url, self._api_key, timeout=self._timeout, **self._tls_args) as sync:
                return _datasets.upload(sync, name, source, parallel=parallel, progress=progress,
                                        same_host=same_host, owner=self)  # type: ignore[arg-type]

        result = await asyncio.to_thread(work)
        return AsyncDataset(self, result.data, result)

    async def datasets(self) -> list[AsyncDataset]:
        return [AsyncDataset(self, d) for d in (await self._drive(_datasets.list_datasets())).data]

    async def dataset(self, name: str, version: int | None = None) -> AsyncDataset:
        return AsyncDataset(self, await self._drive(_datasets.get_dataset(name, version)))
