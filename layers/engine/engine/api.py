"""What the three HTTP handlers share: request models, the error contract, the resolver.

Handlers in functions/ stay thin: they declare their route on a resolver built here, call
the service, and return its model. Errors always answer JSON `{code, message, details}`.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from pydantic import BaseModel, ConfigDict, Field

from engine.core.state import Position
from engine.core.strategy import STRATEGY_ID_PATTERN, Strategy, StrategyInvalid, format_path
from engine.core.strategy import _clean_loc as clean_loc
from engine.errors import EngineError
from engine.observability import record_error
from engine.service import MAX_BULK_STRATEGIES, ErrorBody

BASE_PATH = "/api/v1/execution"
MAX_BODY_BYTES = 256 * 1024

logger = Logger(service="execution-engine", child=True)

ERROR_RESPONSES: dict[int, OpenAPIResponse] = {
    code: OpenAPIResponse(
        description=description,
        content={"application/json": {"schema": ErrorBody.model_json_schema()}},
    )
    for code, description in {
        400: "malformed request (e.g. body is not JSON)",
        404: "unknown strategy",
        409: "a concurrent evaluation of the same strategy committed first; nothing was written",
        413: "request body too large",
        415: "the body is not JSON (send Content-Type: application/json)",
        422: "invalid request; every problem is named in details",
        503: "market data unavailable or stale, or storage unavailable; nothing was written",
    }.items()
}


def responses(success: str) -> dict[int, OpenAPIResponse]:
    """A route's documented answers: its success plus the shared error contract."""
    return {200: OpenAPIResponse(description=success), **ERROR_RESPONSES}


class EvaluateDraftRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy: Strategy
    positions: list[Position] = Field(
        default_factory=list, description="open positions to evaluate the draft against"
    )


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy_ids: Annotated[
        list[Annotated[str, Field(pattern=STRATEGY_ID_PATTERN)]],
        Field(min_length=1, max_length=MAX_BULK_STRATEGIES),
    ]
    persist: bool = True


def error_response(
    status: int, code: str, message: str, details: list[dict[str, str]] | None = None
) -> Response[str]:
    record_error(code)
    body = ErrorBody(code=code, message=message, details=details or [])
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body=body.model_dump_json(),
    )


def build_resolver() -> APIGatewayRestResolver:
    """A REST resolver with validation (and so OpenAPI) and the shared error contract."""
    app = APIGatewayRestResolver(enable_validation=True)

    @app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
    def _invalid(exc: RequestValidationError) -> Response[str]:
        details = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            if err.get("type") == "json_invalid":
                return error_response(400, "malformed_json", "request body is not valid JSON")
            where = loc[0] if loc else "body"
            path = format_path(clean_loc(loc[1:])) or str(where)
            details.append({"path": path, "message": str(err.get("msg", "invalid"))})
        message = "; ".join(f"{d['path']}: {d['message']}" for d in details) or "invalid request"
        return error_response(422, "invalid_request", message, details)

    @app.exception_handler(StrategyInvalid)  # type: ignore[untyped-decorator]
    def _invalid_strategy(exc: StrategyInvalid) -> Response[str]:
        details = [{"path": path, "message": msg} for path, msg in exc.problems]
        return error_response(422, "invalid_strategy", str(exc), details)

    @app.exception_handler(EngineError)  # type: ignore[untyped-decorator]
    def _engine_error(exc: EngineError) -> Response[str]:
        if exc.status >= 500:
            logger.warning("request failed", extra={"code": exc.code, "error": exc.message})
        return error_response(exc.status, exc.code, exc.message, exc.details)

    @app.not_found
    def _not_found(_: Exception) -> Response[str]:
        return error_response(404, "route_not_found", "no such route")

    return app


def oversized(event: dict[str, Any]) -> Response[str] | None:
    """API Gateway caps payloads at 10 MB; we cap far lower before parsing anything."""
    body = event.get("body") or ""
    if len(body.encode() if isinstance(body, str) else body) > MAX_BODY_BYTES:
        return error_response(
            413, "payload_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes"
        )
    return None


def unsupported_media(event: dict[str, Any]) -> Response[str] | None:
    """Bodies are JSON. Anything declared otherwise (multipart, XML, text, forms) is refused
    before the resolver would try, and fail, to parse it."""
    if not event.get("body"):
        return None
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    media = str(headers.get("content-type", "")).split(";", 1)[0].strip().lower()
    if media in ("", "application/json") or media.endswith("+json"):
        return None
    return error_response(
        415, "unsupported_media_type", f"request bodies are JSON; got Content-Type {media!r}"
    )


def handle_http(app: APIGatewayRestResolver, event: dict[str, Any], context: Any) -> dict[str, Any]:
    """A handler's whole HTTP path: refuse oversized or non-JSON bodies unparsed, then route."""
    refused = oversized(event) or unsupported_media(event)
    if refused is not None:
        return to_proxy_response(refused)
    return app.resolve(event, context)


def to_proxy_response(response: Response[str]) -> dict[str, Any]:
    return {
        "statusCode": response.status_code,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": response.body if isinstance(response.body, str) else json.dumps(response.body),
        "isBase64Encoded": False,
    }
