"""POST /api/v1/execution/evaluate: evaluate a draft strategy object; never writes."""

from __future__ import annotations

from engine.entrypoints.coldstart import imports_done

from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from engine.bootstrap import service
from engine.core.state import EvaluationResult
from engine.entrypoints.http import (
    BASE_PATH,
    EvaluateDraftRequest,
    build_resolver,
    handle_http,
    responses,
)
from engine.entrypoints.observability import instrumented, record_evaluation

app = build_resolver()


@app.post(
    f"{BASE_PATH}/evaluate",
    summary="Evaluate a draft strategy object against current market data",
    description="Validates the strategy (every problem is named with its path) and evaluates "
    "it with the given open positions. Nothing is ever written.",
    responses=responses("the evaluation"),
)
def evaluate_by_object(request: EvaluateDraftRequest) -> EvaluationResult:
    result = service().evaluate_draft(request.strategy, request.positions)
    record_evaluation(result)
    return result


@instrumented(correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle_http(app, event, context)


imports_done()  # last: see engine/entrypoints/coldstart.py
