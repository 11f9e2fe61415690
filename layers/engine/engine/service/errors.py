"""Errors the service layer raises; each maps to one HTTP status and a machine-readable code."""

from __future__ import annotations


class EngineError(Exception):
    status = 500
    code = "internal_error"

    def __init__(self, message: str, *, details: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class InvalidRequest(EngineError):
    status = 422
    code = "invalid_request"


class MalformedJson(EngineError):
    """A request body that is not JSON; the message says where it breaks."""

    status = 400
    code = "malformed_json"


class StrategyNotFound(EngineError):
    status = 404
    code = "strategy_not_found"


class ConcurrentEvaluation(EngineError):
    """Another evaluation of the same strategy committed first; nothing was written."""

    status = 409
    code = "concurrent_evaluation"


class MarketDataUnavailable(EngineError):
    status = 503
    code = "market_data_unavailable"


class MarketDataStale(EngineError):
    status = 503
    code = "market_data_stale"


class StorageUnavailable(EngineError):
    """DynamoDB kept failing (throttling, transient errors) after retries."""

    status = 503
    code = "storage_unavailable"


class NotDone(EngineError):
    """A bulk request's time ran out before this strategy was evaluated or committed; nothing
    was written for it, and evaluating it again is safe."""

    status = 503
    code = "not_done"


# Time a bulk request keeps in hand before it starts a strategy's fetch or commit: one storage
# attempt's bound (engine.adapters.dynamodb._retry.ATTEMPT_BOUND_S), so what it starts it finishes.
STEP_RESERVE_S = 5.0
OUT_OF_TIME = (
    "the request's time ran out (API Gateway answers within 29 s); nothing was written for "
    "this strategy: evaluate it again"
)
