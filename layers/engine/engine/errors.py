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
