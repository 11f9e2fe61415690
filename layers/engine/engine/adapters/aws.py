"""AWS clients for every adapter, made with botocore alone, from one session per thread.

boto3 adds nothing the engine uses (resources, S3 transfers), and importing it loads
s3transfer and multiprocessing: a third of an event function's import (issue 14). botocore
finds the region and the credentials in the same places boto3 does. One session per thread,
shared with PynamoDB's models (`engine.adapters.dynamodb.connection`), loads botocore's
endpoint and service data once; sessions are per thread because creating clients from one
session is not thread-safe.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from botocore.session import Session

_sessions = threading.local()


def thread_session() -> Session:
    """This thread's botocore session, made at its first use.

    botocore is imported here, not at the top: it brings urllib3, http and email, about a
    quarter of an event function's import, which its first invocation pays instead (its
    first client needs them), and modules that only import this one never do.
    """
    session: Session | None = getattr(_sessions, "session", None)
    if session is None:
        import botocore.session

        session = _sessions.session = botocore.session.get_session()
    return session


def client(service: str, **options: Any) -> Any:
    """A botocore client of `service` (`region_name`, `endpoint_url`, `config`, ... as boto3's)."""
    return thread_session().create_client(service, **options)
