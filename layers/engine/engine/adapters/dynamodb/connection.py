"""Where the models' requests go: one botocore session per thread, and the binding of every
model to the endpoint, region and table names of the settings.

Nothing happens at import: `configure(settings)` is called once by whoever starts the process
(a Lambda's bootstrap, the CLI, the local stack); `bind` re-points the models (tests).
"""

from __future__ import annotations

import pynamodb.connection.base

from engine.adapters.aws import thread_session
from engine.adapters.dynamodb.models import ALL_MODELS
from engine.settings import DEFAULT_REGION, Settings


def share_sessions() -> None:
    """Give PynamoDB one botocore session per thread (engine.adapters.aws) instead of one per
    model: each session loads botocore's endpoint and service data again, five models five
    times on a Lambda cold start."""
    pynamodb.connection.base.get_session = thread_session  # type: ignore[attr-defined]


def configure(settings: Settings) -> None:
    """Point every model where `settings` say, sharing sessions; the process's one set-up."""
    share_sessions()
    bind(
        host=settings.dynamodb_endpoint,
        region=settings.region,
        table_names=dict(settings.table_names),
    )


def reset_connections() -> None:
    """Drop the models' cached connections (and botocore clients); the next call reconnects."""
    for model in ALL_MODELS:
        model._connection = None


def bind(
    *,
    host: str | None,
    region: str | None = None,
    table_names: dict[str, str] | None = None,
) -> None:
    """Point every model at `host` (None = AWS) in `region`, optionally renaming tables.

    `table_names` maps a model name (`StrategyModel`) to its table name. Cached connections
    are dropped so the next request uses the new settings.
    """
    for model in ALL_MODELS:
        model.Meta.host = host
        model.Meta.region = region or DEFAULT_REGION
        if table_names and model.__name__ in table_names:
            model.Meta.table_name = table_names[model.__name__]
    reset_connections()
