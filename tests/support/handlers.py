"""The Lambda handlers as the tests call them: by function name, with the sample events."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine.entrypoints.local.template import api_routes, load_function_module

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "events"


class Context:
    function_name = "test"
    function_version = "$LATEST"
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:test"
    memory_limit_in_mb = 1024
    aws_request_id = "req-1"
    log_group_name = "/aws/lambda/test"
    log_stream_name = "test"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def handler(function: str) -> Any:
    route = next(r for r in api_routes() if r.function == function)
    return load_function_module(route.code_uri, "app", route.function).lambda_handler


def answer(result: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    return int(result["statusCode"]), json.loads(result["body"])
