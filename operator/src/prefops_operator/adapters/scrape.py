"""Read a trainer pod's Prometheus endpoint (docs/contract.md §5). One HTTP GET, short timeout, never raises.

A pod is the job author's code, so its answer is untrusted: no redirect is followed (a pod could point the operator
at any address it reaches, the apiserver or a metadata service included), a body over :data:`MAX_BYTES` is dropped
unread past the cap, and what is kept is the parsed samples, never the text. A large body is parsed in a thread, off
the event loop every job's reconcile shares.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from ..core.progress import Sample, parse_exposition
from .capped import read_capped

log = logging.getLogger(__name__)
#: the most a metrics answer may hold: a trainer's is a few KiB
MAX_BYTES = 256 * 1024
#: a body at least this big is parsed in a thread (parsing costs about 0.1 ms per KiB)
PARSE_IN_THREAD = 32 * 1024


class Scraper:
    """Plain-HTTP GETs of ``http://<pod IP>:<port>/metrics`` over one shared session."""

    def __init__(self, timeout: float) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def fetch(self, ip: str, port: int) -> list[Sample] | None:
        """The exposition's samples, or ``None`` when the pod does not answer (yet), answers anything but 200
        (a redirect included) or more than :data:`MAX_BYTES`."""
        body = await self._body(ip, port)
        if body is None:
            return None
        text = body.decode("utf-8", errors="replace")
        if len(body) >= PARSE_IN_THREAD:
            return await asyncio.to_thread(parse_exposition, text)
        return parse_exposition(text)

    async def _body(self, ip: str, port: int) -> bytes | None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        host = f"[{ip}]" if ":" in ip else ip
        url = f"http://{host}:{port}/metrics"
        try:
            async with self._session.get(url, allow_redirects=False) as resp:
                if resp.status != 200:
                    log.debug("no metrics from %s: HTTP %s (a redirect is not followed)", url, resp.status)
                    return None
                body = await read_capped(resp.content, MAX_BYTES)
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            log.debug("no metrics from %s: %s", url, e)
            return None
        if body is None:
            log.warning("metrics of %s dropped: more than %d bytes", url, MAX_BYTES)
        return body

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
