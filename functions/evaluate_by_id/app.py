"""POST /api/v1/execution/evaluate/{strategy_id}: evaluate a stored strategy now."""

from __future__ import annotations

from engine.entrypoints.coldstart import imports_done

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.logging import correlation_paths
from engine.bootstrap import service
from engine.core.state import EvaluationResult
from engine.core.strategy import STRATEGY_ID_PATTERN
from engine.entrypoints.http import BASE_PATH, build_resolver, handle_http, responses
from engine.entrypoints.observability import instrumented, record_evaluation

app = build_resolver()
# The query parameters of the route below; any other is refused (422), not ignored.
QUERY_PARAMETERS = ("persist",)


@app.post(
    f"{BASE_PATH}/evaluate/<strategy_id>",
    summary="Evaluate a stored strategy at its newest closed bar",
    description="With persist (the default) commits orders, trades, positions and state "
    "atomically; persist=false is a dry run that writes nothing.",
    responses=responses("the evaluation"),
)
def evaluate_by_id(
    strategy_id: Annotated[str, Path(pattern=STRATEGY_ID_PATTERN)],
    persist: Annotated[bool, Query(description="false: dry run, writes nothing")] = True,
) -> EvaluationResult:
    result = service().evaluate_by_id(strategy_id, persist=persist)
    record_evaluation(result)
    return result


@instrumented(correlation_paths.API_GATEWAY_REST)
def lambda_handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return handle_http(app, event, context, query=QUERY_PARAMETERS)


imports_done()  # last: see engine/entrypoints/coldstart.py
