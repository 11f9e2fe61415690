"""Bounded exponential backoff around DynamoDB calls.

botocore is configured to make a single attempt (models.BOTOCORE_RETRIES), so this is the one
retry policy: throttling and transient failures are retried with jittered exponential backoff
a bounded number of times, then surface as engine.service.errors.StorageUnavailable. Anything else is
a bug or a misconfiguration and surfaces at once as StorageError.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.exceptions import HTTPClientError
from pynamodb.exceptions import PynamoDBException, TransactWriteError

from engine.adapters.dynamodb.errors import StorageError, TableMissing
from engine.service.deadline import has_time_for
from engine.service.errors import StorageUnavailable

log = logging.getLogger(__name__)

# Each attempt's bound (PynamoDB's defaults are 15 s and 30 s, past API Gateway's 29 s).
# DynamoDB answers in milliseconds; an attempt that has not answered in seconds is a stall.
CONNECT_TIMEOUT_S: Final = 1
READ_TIMEOUT_S: Final = 4
ATTEMPT_BOUND_S: Final = CONNECT_TIMEOUT_S + READ_TIMEOUT_S

T = TypeVar("T")

# Requests DynamoDB rejected outright for load: nothing of them was applied.
THROTTLING_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
    }
)
# Error codes of a failed request that a later identical request may not meet.
TRANSIENT_ERROR_CODES = THROTTLING_CODES | frozenset(
    {
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "TransactionInProgressException",
    }
)
# Cancellation reasons of a TransactWriteItems that are worth another attempt.
TRANSIENT_CANCELLATION_CODES = frozenset(
    {
        "ThrottlingError",
        "ProvisionedThroughputExceeded",
        "TransactionConflict",
        "RequestLimitExceeded",
    }
)


def cancellation_codes(exc: PynamoDBException) -> list[str]:
    """The reasons a transaction was cancelled, one per item that had one."""
    if not isinstance(exc, TransactWriteError):
        return []
    return [reason.code for reason in exc.cancellation_reasons if reason is not None]


def error_code(exc: PynamoDBException) -> str | None:
    """The DynamoDB error code, if the failure had a response at all.

    Read timeouts and closed connections carry `response = None`, on which PynamoDB's own
    `cause_response_code` raises AttributeError; read it defensively here instead.
    """
    try:
        return exc.cause_response_code
    except AttributeError:
        return None


def http_status(exc: PynamoDBException) -> int | None:
    """The HTTP status of the failed call. PynamoDB keeps only the `Error` part of the
    response, but raises from botocore's error, which still has the whole of it."""
    for candidate in (exc.cause, getattr(exc.cause, "__cause__", None), exc.__cause__):
        response = getattr(candidate, "response", None)
        if isinstance(response, dict):
            status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if isinstance(status, int):
                return status
    return None


def is_transient(exc: PynamoDBException) -> bool:
    cause = exc.cause
    if isinstance(cause, BotoConnectionError | HTTPClientError):
        return True  # could not connect, timed out, connection reset
    if isinstance(getattr(cause, "__cause__", None), BotoConnectionError | HTTPClientError):
        return True
    code = error_code(exc)
    if code in TRANSIENT_ERROR_CODES:
        return True
    if code == "TransactionCanceledException":
        codes = cancellation_codes(exc)
        return bool(codes) and all(c in TRANSIENT_CANCELLATION_CODES for c in codes)
    if code is not None and code.isdigit() and int(code) >= 500:
        return True  # a proxy's 5xx page, parsed into a bare status code
    status = http_status(exc)
    return status is not None and status >= 500


@dataclass(frozen=True)
class RetryPolicy:
    """`attempts` tries in all; between them base·2^n seconds (capped), with jitter."""

    attempts: int = 6
    base_delay: float = 0.025
    max_delay: float = 1.0
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)

    def backoff(self, retry: int) -> float:
        cap = min(self.max_delay, self.base_delay * (2**retry))
        return random.uniform(cap / 2, cap)

    def pause(self, retry: int) -> None:
        self.sleep(self.backoff(retry))

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run `fn`, retrying transient DynamoDB failures.

        Exceptions that are not PynamoDB's (ConcurrentEvaluation raised inside `fn`, say)
        pass through untouched.
        """
        last: PynamoDBException | None = None
        for attempt in range(self.attempts):
            if not has_time_for(ATTEMPT_BOUND_S):  # the request's budget (engine.service.deadline)
                cause = f": {describe(last)}" if last is not None else ""
                raise StorageUnavailable(
                    f"DynamoDB {what}: no time left in this request for another attempt "
                    f"after {attempt}{cause}"
                ) from last
            try:
                return fn()
            except PynamoDBException as exc:
                if error_code(exc) == "ResourceNotFoundException":
                    raise TableMissing(
                        f"DynamoDB {what}: a table does not exist ({describe(exc)}); check the "
                        "*_TABLE settings, or create the tables (the local stack does)"
                    ) from exc
                if not is_transient(exc):
                    raise StorageError(f"DynamoDB {what} failed: {describe(exc)}") from exc
                last = exc
                log.warning(
                    "DynamoDB %s: transient failure (attempt %d of %d): %s",
                    what,
                    attempt + 1,
                    self.attempts,
                    describe(exc),
                )
                if attempt + 1 < self.attempts:
                    self.pause(attempt)
        assert last is not None
        raise StorageUnavailable(
            f"DynamoDB {what} kept failing after {self.attempts} attempts: {describe(last)}"
        ) from last

    def exhausted(self, what: str, remaining: int) -> StorageUnavailable:
        return StorageUnavailable(
            f"DynamoDB {what}: {remaining} item(s) still unprocessed after {self.attempts} attempts"
        )


def describe(exc: PynamoDBException) -> str:
    code = error_code(exc)
    try:
        message = exc.cause_response_message or str(exc.cause or exc)
    except AttributeError:  # no response at all (timeouts): the cause says what happened
        message = str(exc.cause or exc)
    reasons = cancellation_codes(exc)
    text = f"{code}: {message}" if code else message
    return f"{text} (reasons: {', '.join(reasons)})" if reasons else text
