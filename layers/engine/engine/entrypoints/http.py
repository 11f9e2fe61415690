"""What the three HTTP handlers share: request models, the error contract, the resolver.

Handlers in functions/ stay thin: they declare their route on a resolver built here, call
the service, and return its model. Errors always answer JSON `{code, message, details}`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection
from typing import Annotated, Any

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import APIGatewayRestResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.utilities.data_classes.common import BaseProxyEvent
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from engine.core.error_paths import clean_loc, error_message, format_path
from engine.core.indicators import did_you_mean
from engine.core.state import Position
from engine.core.strategy import STRATEGY_ID_PATTERN, Strategy, StrategyInvalid, strategy_keys
from engine.entrypoints.observability import record_error
from engine.service.deadline import time_budget
from engine.service.errors import EngineError, InvalidRequest, MalformedJson
from engine.service.execution import MAX_BULK_STRATEGIES
from engine.service.results import ErrorBody

BASE_PATH = "/api/v1/execution"
MAX_BODY_BYTES = 256 * 1024
# Limits checked on the raw text before anything recursive (json.loads, pydantic, repr) runs.
# A strategy's conditions have limits of their own (engine.core.strategy, 32 levels: up to 67
# levels of JSON through all/any lists); these bound any body.
MAX_JSON_DEPTH = 100
# API Gateway gives up on an integration after 29 s. Within this budget every storage attempt
# and bulk step that starts also ends (engine.service.deadline), leaving seconds for the rest.
HTTP_BUDGET_S = 24.0
# Integers longer than this are read as floats (an infinity when beyond float range), so the
# field's own range check names them; Python refuses to convert ints of 4,300 digits or more.
MAX_INT_DIGITS = 400

logger = Logger(service="execution-engine", child=True)

_ERROR_SCHEMA = ErrorBody.model_json_schema()  # once: building it is most of this table's cost
ERROR_RESPONSES: dict[int, OpenAPIResponse] = {
    code: OpenAPIResponse(
        description=description,
        content={"application/json": {"schema": _ERROR_SCHEMA}},
    )
    for code, description in {
        400: "malformed request (e.g. body is not JSON)",
        404: "unknown strategy",
        409: "a concurrent evaluation of the same strategy committed first; nothing was written",
        413: "request body too large",
        415: "the body is not JSON (send Content-Type: application/json)",
        422: "invalid request; every problem is named in details",
        503: "market data unavailable or stale, storage unavailable or a table missing; "
        "nothing was written",
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


# An id longer than this cannot be valid; the bound keeps a malformed one's echo short.
MAX_ID_CHARS = 200


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    strategy_ids: Annotated[
        list[Annotated[str, Field(max_length=MAX_ID_CHARS)]],
        Field(
            min_length=1,
            max_length=MAX_BULK_STRATEGIES,
            description=f"strategy ids; one that is malformed (not {STRATEGY_ID_PATTERN}) "
            "fails alone in results, as an unknown one does",
        ),
    ]
    persist: StrictBool = True


# Keys of the request bodies, suggested for a misspelt one (as a strategy's own keys are).
REQUEST_KEYS = frozenset(
    {*EvaluateDraftRequest.model_fields, *BulkRequest.model_fields, *Position.model_fields}
)


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


class _Resolver(APIGatewayRestResolver):
    """Powertools' REST resolver, keeping the event it resolves as its own.

    Powertools keeps it on its `BaseRouter` class, one per process. That is right in Lambda,
    which runs one invocation per process. It is wrong in the local stack, which runs every
    function's container as a thread of one process: a bulk request's validation could read
    a concurrent by-id request's event and answer 422 "body: Field required". Each
    function's invocations are one at a time (one resolver each, one container each), so
    a resolver's own event is always the one it is resolving.
    """

    _event: BaseProxyEvent

    @property
    def current_event(self) -> BaseProxyEvent:  # type: ignore[override]
        return self._event

    def _to_proxy_event(self, event: dict[str, Any]) -> BaseProxyEvent:
        # resolve() converts the event here, then reads it back as current_event
        self._event = super()._to_proxy_event(event)
        return self._event


def build_resolver() -> APIGatewayRestResolver:
    """A REST resolver with validation (and so OpenAPI) and the shared error contract."""
    app = _Resolver(enable_validation=True, json_body_deserializer=parse_json_body)

    @app.exception_handler(RequestValidationError)  # type: ignore[untyped-decorator]
    def _invalid(exc: RequestValidationError) -> Response[str]:
        details = []
        for err in exc.errors():
            loc = tuple(err.get("loc", ()))
            where = loc[0] if loc else "body"
            path = format_path(clean_loc(loc[1:])) or str(where)
            details.append(
                {"path": path, "message": error_message(err, REQUEST_KEYS | strategy_keys())}
            )
        message = "; ".join(f"{d['path']}: {d['message']}" for d in details) or "invalid request"
        if _bare_strategy(exc):
            message = (
                'the body is {"strategy": {...}, "positions": [...]}: wrap the strategy in '
                '{"strategy": ...}. ' + message
            )
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


def _bare_strategy(exc: RequestValidationError) -> bool:
    """Whether a draft request is a strategy object itself, not {"strategy": ...}: the body
    lacks `strategy` and holds a strategy's own keys instead."""
    locs = {(e.get("type"), tuple(e.get("loc", ()))) for e in exc.errors()}
    return ("missing", ("body", "strategy")) in locs and any(
        ("extra_forbidden", ("body", key)) in locs for key in ("strategy_id", "entry")
    )


# --- the raw request, before the resolver ---------------------------------------------------

_JSON_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")


def json_depth(text: str) -> int:
    """How deep the arrays and objects of a JSON text nest, without parsing it (no recursion)."""
    depth = deepest = 0
    for char in _NOT_BRACKET.sub("", _JSON_STRING.sub("", text)):
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def _bounded_int(literal: str) -> int | float:
    return int(literal) if len(literal.lstrip("-")) <= MAX_INT_DIGITS else float(literal)


def parse_json_body(text: str) -> Any:
    """The request body as JSON, within the limits: nesting depth (422), integer length (read
    as a float, so the field's range check names it), and a malformed body answered 400 with
    the line and column where it breaks."""
    depth = json_depth(text)
    if depth > MAX_JSON_DEPTH:
        message = f"request body nests {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed"
        raise InvalidRequest(message, details=[{"path": "body", "message": message}])
    try:
        return json.loads(text, parse_int=_bounded_int)
    except json.JSONDecodeError as exc:
        message = (
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        )
        raise MalformedJson(message, details=[{"path": "body", "message": message}]) from None


def oversized(event: dict[str, Any]) -> Response[str] | None:
    """API Gateway caps payloads at 10 MB; we cap far lower before parsing anything."""
    body = event.get("body") or ""
    if len(body.encode() if isinstance(body, str) else body) > MAX_BODY_BYTES:
        return error_response(
            413, "payload_too_large", f"request body exceeds {MAX_BODY_BYTES} bytes"
        )
    return None


def _media_type(event: dict[str, Any]) -> str:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    return str(headers.get("content-type") or "").split(";", 1)[0].strip().lower()


def is_json_media(media: str) -> bool:
    """application/json in any letter case, or a structured +json type; none (curl -d) too."""
    return media in ("", "application/json") or media.endswith("+json")


def unsupported_media(event: dict[str, Any]) -> Response[str] | None:
    """Bodies are JSON. Anything declared otherwise (multipart, XML, text, forms) is refused
    before the resolver would try, and fail, to parse it."""
    if not event.get("body"):
        return None
    media = _media_type(event)
    if is_json_media(media):
        return None
    return error_response(
        415, "unsupported_media_type", f"request bodies are JSON; got Content-Type {media!r}"
    )


def _as_json_request(event: dict[str, Any]) -> dict[str, Any]:
    """The event with its JSON content type spelled as the resolver expects it
    (`application/json`, lower case), whatever JSON media type the client declared."""

    def without_content_type(headers: dict[str, Any] | None) -> dict[str, Any]:
        return {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}

    return {
        **event,
        "headers": {
            **without_content_type(event.get("headers")),
            "content-type": "application/json",
        },
        "multiValueHeaders": {
            **without_content_type(event.get("multiValueHeaders")),
            "content-type": ["application/json"],
        },
    }


def unknown_query(event: dict[str, Any], allowed: Collection[str]) -> Response[str] | None:
    """Query parameters a route does not take, or one given twice, are refused: a misspelt
    `persist=false` must never turn a dry run into a live one."""
    single = event.get("queryStringParameters") or {}
    multi = event.get("multiValueQueryStringParameters") or {}
    details = []
    for name in sorted(set(single) | set(multi)):
        if name not in allowed:
            hint = did_you_mean(name.strip("[]"), allowed)
            takes = ", ".join(sorted(allowed)) if allowed else "none"
            details.append(
                {
                    "path": name,
                    "message": f"unknown query parameter (this route takes: {takes}){hint}",
                }
            )
        elif len(multi.get(name) or []) > 1:
            details.append({"path": name, "message": "given more than once"})
    if not details:
        return None
    message = "; ".join(f"{d['path']}: {d['message']}" for d in details)
    return error_response(422, "invalid_request", message, details)


def handle_http(
    app: APIGatewayRestResolver,
    event: dict[str, Any],
    context: Any,
    *,
    query: Collection[str] = (),
) -> dict[str, Any]:
    """A handler's whole HTTP path: refuse oversized or non-JSON bodies unparsed, and query
    parameters other than `query`; then route. Whatever fails unexpectedly is still answered
    in the error contract (500 internal_error), never a dropped connection."""
    try:
        refused = oversized(event) or unsupported_media(event) or unknown_query(event, query)
        if refused is not None:
            return to_proxy_response(refused)
        if event.get("body"):
            event = _as_json_request(event)
        with time_budget(HTTP_BUDGET_S):
            return app.resolve(event, context)
    except Exception:
        logger.exception("unhandled error answering a request")
        return to_proxy_response(
            error_response(500, "internal_error", "the request failed unexpectedly")
        )


def to_proxy_response(response: Response[str]) -> dict[str, Any]:
    return {
        "statusCode": response.status_code,
        "headers": {"Content-Type": content_types.APPLICATION_JSON},
        "body": response.body if isinstance(response.body, str) else json.dumps(response.body),
        "isBase64Encoded": False,
    }
