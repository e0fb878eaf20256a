"""Read an HTTP body from a server the operator does not trust (a trainer pod, the Hub) up to a cap, never past it."""

from __future__ import annotations

import aiohttp

CHUNK = 64 * 1024


async def read_capped(stream: aiohttp.StreamReader, cap: int) -> bytes | None:
    """The whole body, or None as soon as it passes ``cap`` bytes (the rest is never read)."""
    chunks, total = [], 0
    while chunk := await stream.read(CHUNK):
        total += len(chunk)
        if total > cap:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
