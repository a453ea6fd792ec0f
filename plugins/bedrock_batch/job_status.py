"""Bedrock batch job statuses and what is read off a job description; cheap to import.

Kept apart from hooks.py (which pulls in boto3 through the provider's AwsBaseHook) so that DAG files,
operators and sensors can use them at parse time without the heavy imports.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

ACTIVE_STATUSES = frozenset({"Submitted", "Validating", "Scheduled", "InProgress", "Stopping"})
SUCCESS_STATUSES = frozenset({"Completed"})
PARTIAL_STATUSES = frozenset({"PartiallyCompleted"})
FAILED_STATUSES = frozenset({"Failed", "Stopped", "Expired"})
TERMINAL_STATUSES = SUCCESS_STATUSES | PARTIAL_STATUSES | FAILED_STATUSES

DEFAULT_TIMEOUT_HOURS = 168
"""Used for a deadline only when the service reports neither an expiration time nor a timeout."""

_TRANSIENT_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "InternalServerException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


REFUSED_CODES = frozenset({"ValidationException", "AccessDeniedException", "ResourceNotFoundException"})
"""AWS answers meaning the request is wrong (model, role, input, an unknown job): a retry gets the same."""

WAIT_REFUSED_CODES = REFUSED_CODES - {"AccessDeniedException"}
"""The answers that end a wait at once (a malformed or unknown job). Access denied while waiting is left
to the task's retries: it is often an IAM change in progress, and the job keeps running (and billing)."""


def aws_error_code(error: BaseException) -> str | None:
    """The AWS error code of a botocore ``ClientError`` (or anything with its ``response``); else None."""
    response = getattr(error, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, Mapping) else None


def is_transient_error(error: BaseException) -> bool:
    """Whether ``error`` is worth retrying later: throttling, a 5xx, or a connection problem."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return code in _TRANSIENT_CODES or status == 429 or status >= 500
    return isinstance(error, BotoConnectionError | HTTPClientError | asyncio.TimeoutError | ConnectionError)


def job_progress(job: Mapping[str, Any]) -> dict[str, int | None]:
    """The record counts of a job (None where the service has not reported one yet)."""
    return {
        "total_records": job.get("totalRecordCount"),
        "processed_records": job.get("processedRecordCount"),
        "success_records": job.get("successRecordCount"),
        "error_records": job.get("errorRecordCount"),
    }


def job_deadline(job: Mapping[str, Any], *, margin: timedelta = timedelta(hours=1)) -> datetime:
    """
    The moment after which waiting for ``job`` is pointless.

    ``jobExpirationTime`` when the service gives it, else ``submitTime`` plus the job's timeout
    (``timeoutDurationInHours``); ``margin`` covers the time Bedrock needs to move a job that ran out
    of time into its terminal status.
    """
    expires = job.get("jobExpirationTime")
    if expires is None:
        submitted = job.get("submitTime") or datetime.now(UTC)
        hours = job.get("timeoutDurationInHours") or DEFAULT_TIMEOUT_HOURS
        expires = submitted + timedelta(hours=hours)
    if expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return expires + margin
