"""The same-host socket's read buffers: reused between batches and uploads, at most IN_FLIGHT kept."""

from __future__ import annotations

from aiaas_backend.upload_socket import GROUP_BYTES, IN_FLIGHT, Arenas

CHUNK = 4 * 1024 * 1024


def test_buffers_are_reused_sized_to_the_batch_and_few_are_kept():
    arenas = Arenas()
    small = arenas.take(1000, CHUNK)
    assert len(small) == CHUNK  # never under a chunk
    big = arenas.take(10 * GROUP_BYTES, CHUNK)
    assert len(big) == GROUP_BYTES  # never over a group: the batch flushes when it is full
    arenas.give(small)
    arenas.give(big)
    assert arenas.take(CHUNK + 1, CHUNK) is big  # the smallest that fits, not a new one
    assert arenas.take(1, CHUNK) is small
    held = [arenas.take(GROUP_BYTES, CHUNK) for _ in range(IN_FLIGHT + 2)]
    for arena in held:
        arenas.give(arena)
    again = [arenas.take(GROUP_BYTES, CHUNK) for _ in range(IN_FLIGHT + 2)]
    assert sum(any(a is h for h in held) for a in again) == IN_FLIGHT  # the rest were let go
