"""Retrying what an outage interrupts: object storage and the Hub.

Below this, botocore/s3fs and huggingface_hub retry a few times within seconds; that rides out a dropped
connection, not a store that is away for a minute. :func:`retrying` keeps trying with exponential backoff (1 s,
2 s, 4 s... at most 30 s apart, jittered) until ``$PREFOPS_RETRY_SECONDS`` (default 300) have passed, then raises
:class:`TransientError`: exit 1, not 2, so the operator's restart policy applies. One failure is never final: the
client libraries' own retries can make a single attempt outlast a short budget, so there is always at least one
fresh attempt after a pause. Only failures that say "try again" are retried (connection errors, timeouts, HTTP
5xx, 408 and 429, S3's SlowDown); a 403 or 404 is the job's problem and goes straight through.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from ..core.errors import TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Seconds between the first failure and giving up.
DEFAULT_BUDGET_S = 300.0
FIRST_DELAY_S, MAX_DELAY_S = 1.0, 30.0
#: Exception classes (by name, anywhere in the class's MRO) that mean the connection, not the request, failed:
#: builtins, botocore, httpx, aiohttp, requests and fsspec spell them so.
CONNECTION_ERRORS = frozenset(
    {"ConnectionError", "TimeoutError", "HTTPClientError", "TransportError", "ClientConnectionError",
     "ClientPayloadError", "ServerTimeoutError", "Timeout", "FSTimeoutError", "IncompleteRead"}
)  # fmt: skip
#: S3 error codes that ask the client to come back later.
RETRY_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestLimitExceeded", "ServiceUnavailable",
     "InternalError", "TooManyRequests"}
)  # fmt: skip


def budget_s() -> float:
    return float(os.environ.get("PREFOPS_RETRY_SECONDS", DEFAULT_BUDGET_S))


def delay_s(attempt: int) -> float:
    """The pause after failed attempt ``attempt`` (0-based): doubling from 1 s up to 30 s. Pure."""
    return min(MAX_DELAY_S, FIRST_DELAY_S * 2.0 ** min(attempt, 16))


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def _http_status(e: BaseException) -> tuple[int | None, str | None]:
    """(HTTP status, S3 error code) an exception carries (botocore's dict response, httpx's response object)."""
    response: Any = getattr(e, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        return response.get("ResponseMetadata", {}).get("HTTPStatusCode"), code
    status = getattr(response, "status_code", None)
    return (status if isinstance(status, int) else None), None


#: Exception classes (by name) that look like connection errors but are the job's configuration.
CONFIGURED_OFFLINE = frozenset({"OfflineModeIsEnabled"})  # huggingface_hub with HF_HUB_OFFLINE=1


def _verdict(e: BaseException) -> bool | None:
    """True: this link says try again; False: it says the request itself is wrong; None: it does not say."""
    if type(e).__name__ in CONFIGURED_OFFLINE:
        return False
    status, code = _http_status(e)
    if code in RETRY_CODES:
        return True
    if status is not None:
        return status >= 500 or status in (408, 429)
    if any(c.__name__ in CONNECTION_ERRORS for c in type(e).__mro__):
        return True
    return None


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` is an outage worth retrying: some link of its cause chain says so (a connection error, a
    5xx/429) and none says the request is wrong (a 4xx), which libraries wrap in e.g. FileNotFoundError."""
    verdicts = [v for v in map(_verdict, _chain(error)) if v is not None]
    return bool(verdicts) and all(verdicts)


def retrying(what: str, call: Callable[[], T], transient: Callable[[BaseException], bool] = is_transient) -> T:
    """``call()``, again after each transient failure until the budget is spent (at least once more, whatever the
    budget); then :class:`TransientError` naming ``what`` and the last failure."""
    start, attempt = time.monotonic(), 0
    while True:
        try:
            return call()
        except Exception as e:
            if not transient(e):
                raise
            spent = time.monotonic() - start
            pause = delay_s(attempt) * random.uniform(0.75, 1.0)
            if attempt >= 1 and spent + pause > budget_s():
                raise TransientError(
                    f"{what}: still failing after {attempt + 1} attempts over {spent:.0f} s ({_one_line(e)}). This "
                    "is an outage, not a mistake in the job: the phase exits 1 and the restart policy "
                    "(spec.backoffLimit) runs it again"
                ) from e
            log.warning("%s: %s; retrying in %.1f s (attempt %d)", what, _one_line(e), pause, attempt + 1)
            time.sleep(pause)
            attempt += 1


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:300]}"
