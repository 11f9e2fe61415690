"""What the service's use cases answer beyond one evaluation (`core.state.EvaluationResult`):
a bulk run, a scheduled run, a failure. The HTTP API serves these models as they are, and its
OpenAPI document is generated from them, so the wire format has this one definition."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from engine.core.state import EvaluationResult


class ErrorBody(BaseModel):
    code: str
    message: str
    details: list[dict[str, str]] = Field(default_factory=list)


class BulkFailure(BaseModel):
    strategy_id: str
    error: ErrorBody


class BulkSummary(BaseModel):
    requested: int
    succeeded: int
    failed: int
    pairs: int
    market_data_fetches: int
    indicator_computations: int
    duration_ms: int


class BulkResult(BaseModel):
    results: list[EvaluationResult | BulkFailure]
    summary: BulkSummary


class SkippedStrategy(BaseModel):
    """A strategy a scheduled run did not evaluate, and why (neither is a failure)."""

    strategy_id: str
    reason: Literal["paused", "already_evaluated"]


class LateEvaluation(BaseModel):
    """A scheduled evaluation at a newer bar than the one its tick was for (a late or
    redelivered chunk): signals act at the newest closed bar only."""

    strategy_id: str
    scheduled_bar: datetime = Field(description="newest bar closed at the tick's time")
    bar: datetime = Field(description="the bar evaluated")
    bars_passed_over: int


class ScheduledResult(BulkResult):
    """A scheduled run over some strategy ids: the bulk answer, and what it left alone."""

    skipped: list[SkippedStrategy] = Field(default_factory=list)
    late: list[LateEvaluation] = Field(default_factory=list)
