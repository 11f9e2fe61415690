"""A Telegram message per fill and cooldown trip (engine.adapters.events.telegram); off by default."""

from __future__ import annotations

from engine.entrypoints.coldstart import imports_done

from functools import cache
from typing import Any

from engine.adapters import aws
from engine.adapters.events.secrets import ParameterSecret
from engine.adapters.events.telegram import TelegramNotifier
from engine.entrypoints.observability import logger
from engine.settings import settings


@cache
def _token() -> ParameterSecret:
    return ParameterSecret(
        aws.client("ssm"), settings().events.required("telegram_bot_token_parameter")
    )


class NotDelivered(Exception):
    """Telegram did not take the message: raised so that Lambda retries the event."""


@logger.inject_lambda_context
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    detail = event.get("detail", {})
    notifier = TelegramNotifier(_token().get(), settings().events.required("telegram_chat_id"))
    if not notifier.notify(detail):
        raise NotDelivered(f"telegram refused the message of event {detail.get('id')}")
    return {"notified": detail.get("id")}


imports_done()  # last: see engine/entrypoints/coldstart.py
