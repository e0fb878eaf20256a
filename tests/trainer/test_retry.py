"""Which failures are an outage worth waiting out, and which are the job's problem, on the exceptions the real
libraries raise."""

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from prefops_trainer.adapters.retry import delay_s, is_transient, retrying
from prefops_trainer.core.errors import TransientError


def client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "Op")


def wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    outer.__cause__ = cause
    return outer


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (client_error(503, "SlowDown"), True),
        (client_error(500, "InternalError"), True),
        (client_error(429, "TooManyRequests"), True),
        (EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), True),
        (ConnectionResetError(104, "Connection reset by peer"), True),
        (wrapped(FileNotFoundError("not cached"), client_error(503, "SlowDown")), True),
        (client_error(404, "NoSuchKey"), False),
        (client_error(403, "AccessDenied"), False),
        (wrapped(PermissionError("denied"), client_error(403, "AccessDenied")), False),
        (FileNotFoundError("bucket/key"), False),
        (ValueError("a bug"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_outages_are_told_from_the_jobs_own_mistakes(error, transient):
    assert is_transient(error) is transient


def test_the_hub_switched_off_is_configuration_not_an_outage():
    from huggingface_hub.errors import OfflineModeIsEnabled

    assert is_transient(OfflineModeIsEnabled("HF_HUB_OFFLINE=1")) is False


def test_backoff_doubles_up_to_thirty_seconds():
    assert [delay_s(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_failure_that_is_not_an_outage_is_not_retried(monkeypatch):
    monkeypatch.setenv("PREFOPS_RETRY_SECONDS", "60")
    calls = []

    def denied():
        calls.append(1)
        raise PermissionError("AccessDenied")

    with pytest.raises(PermissionError):
        retrying("reading s3://b/k", denied)
    assert len(calls) == 1


def test_an_outage_past_the_budget_becomes_a_transient_error_naming_what_failed(monkeypatch):
    monkeypatch.setenv("PREFOPS_RETRY_SECONDS", "0")

    calls = []

    def away():
        calls.append(1)
        raise EndpointConnectionError(endpoint_url="http://127.0.0.1:9/b/k")

    with pytest.raises(TransientError, match=r"reading s3://b/k: still failing after 2 attempts over \d+ s \("):
        retrying("reading s3://b/k", away)
    assert len(calls) == 2, "one failure is never final: one more attempt after a pause, whatever the budget"
