"""Read a trainer pod's Prometheus endpoint (docs/contract.md §5). One HTTP GET, short timeout, never raises."""

from __future__ import annotations

import logging

import aiohttp

log = logging.getLogger(__name__)
MAX_BYTES = 4 * 1024 * 1024


class Scraper:
    """Plain-HTTP GETs of ``http://<pod IP>:<port>/metrics`` over one shared session."""

    def __init__(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, ip: str, port: int) -> str | None:
        """The exposition text, or ``None`` when the pod does not answer (yet)."""
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        host = f"[{ip}]" if ":" in ip else ip
        url = f"http://{host}:{port}/metrics"
        try:
            async with self._session.get(url) as resp:
                if resp.status != 200:
                    return None
                return (await resp.content.read(MAX_BYTES)).decode("utf-8", errors="replace")
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.debug("no metrics from %s: %s", url, e)
            return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
