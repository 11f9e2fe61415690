"""An event's bytes and their signature: what a subscriber receives and checks.

The body is the event as compact JSON with sorted keys, so the same event always has the
same bytes (and the same signature) however often it is redelivered. The signature is the
GitHub-style header `X-Signature-256: sha256=<hex HMAC-SHA256 of the body>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Sequence
from typing import Any, Final

from engine.core.events import Event

SIGNATURE_HEADER: Final = "X-Signature-256"
ID_HEADER: Final = "X-Event-Id"
TYPE_HEADER: Final = "X-Event-Type"
_PREFIX: Final = "sha256="


def event_body(event: Event | dict[str, Any]) -> bytes:
    data = event.model_dump(mode="json") if isinstance(event, Event) else event
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def events_json(events: Sequence[Event]) -> str:
    """A commit's events as one JSON array (the outbox item's `events`)."""
    return "[" + ",".join(event_body(e).decode() for e in events) + "]"


def parse_events(text: str) -> list[Event]:
    raw = json.loads(text)
    if not isinstance(raw, list):
        raise ValueError("an outbox item's events are a JSON array")
    return [Event.model_validate(item) for item in raw]


def sign(body: bytes, secret: str | bytes) -> str:
    """The header value for `body`: `sha256=` and the hex HMAC-SHA256 with `secret`."""
    key = secret.encode() if isinstance(secret, str) else secret
    return _PREFIX + hmac.new(key, body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str | bytes, signature: str) -> bool:
    """Whether `signature` (with or without the `sha256=` prefix) signs `body`; constant time."""
    given = signature.strip()
    if not given.startswith(_PREFIX):
        given = _PREFIX + given
    return hmac.compare_digest(sign(body, secret), given)
