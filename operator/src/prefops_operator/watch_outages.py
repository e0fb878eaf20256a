"""A watch answered 404 is an outage, not the end of the operator.

A restarted apiserver answers 404 on a custom resource until it has read the CRD again, and kopf 1.45 ends the
whole operator when a watch gets one (``APINotFoundError`` from ``continuous_watch``): the job and sweep watches
reconnect within that window. :func:`install` wraps kopf's ``continuous_watch`` (a private name; this module is the
one place that touches it) so that such a watch ends as a dropped connection does, and kopf's ``infinite_watch``
opens it again after its reconnect backoff. A CRD really removed is no different: kopf's resource discovery stops
the watch then.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from kopf._cogs.clients import watching
from kopf._cogs.clients.errors import APINotFoundError

log = logging.getLogger(__name__)
_ORIGINAL = watching.continuous_watch


async def continuous_watch(**kwargs: Any) -> AsyncIterator[Any]:
    """kopf's watch stream, ended quietly (to be opened again) where the apiserver answers 404."""
    try:
        async for event in _ORIGINAL(**kwargs):
            yield event
    except APINotFoundError as e:
        log.warning("the watch of %s got 404 (%s): opening it again", kwargs.get("resource"), e)


def install() -> None:
    watching.continuous_watch = continuous_watch
