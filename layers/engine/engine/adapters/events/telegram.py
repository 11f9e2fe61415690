"""The optional Telegram notifier: one short message per fill and per cooldown trip."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from engine.adapters.events.webhook import Post, classify, http_post

NOTIFIED_TYPES: Final = frozenset({"order.filled", "cooldown.tripped"})
API: Final = "https://api.telegram.org"


def message(event: Mapping[str, Any]) -> str | None:
    """The text for `event`, or None for a type the notifier does not report."""
    data = event.get("data", {})
    where = f"{event.get('strategy_id')} {event.get('asset') or ''}".strip()
    if event.get("type") == "order.filled":
        side = str(data.get("side", "")).replace("_", " ")
        return (
            f"{where}: {side} {data.get('type')} filled, {data.get('quantity')} "
            f"at {data.get('price')} (bar {event.get('bar')})"
        )
    if event.get("type") == "cooldown.tripped":
        return (
            f"{where}: cooldown tripped ({data.get('tier')} tier) at {data.get('tripped_at')}, "
            f"entries blocked for {data.get('blocked_bars')} more bars"
        )
    return None


@dataclass
class TelegramNotifier:
    token: str
    chat_id: str
    post: Post = http_post

    def notify(self, event: Mapping[str, Any]) -> bool:
        """Sends the event's message; False when Telegram did not take it (raise to retry)."""
        text = message(event)
        if text is None:
            return True
        url = f"{API}/bot{urllib.parse.quote(self.token, safe=':')}/sendMessage"
        body = json.dumps({"chat_id": self.chat_id, "text": text}).encode()
        status = self.post(url, body, {"Content-Type": "application/json"}, 10.0)
        return classify(status) == "delivered"
