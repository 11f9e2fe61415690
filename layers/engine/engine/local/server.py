"""A small HTTP server that turns requests into API Gateway REST proxy events.

It serves exactly the routes of template.yaml, by invoking each route's own Lambda handler,
plus the merged OpenAPI document of the three handlers at /openapi.json.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from engine.local.template import Route, api_routes, load_function_module


class _Context:
    """The parts of a Lambda context that Powertools reads."""

    def __init__(self, function: str) -> None:
        self.function_name = function
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:local:000000000000:function:{function}"
        self.memory_limit_in_mb = 1024
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 30_000


def proxy_event(
    route: Route,
    method: str,
    path: str,
    params: dict[str, str],
    query: str,
    body: str,
    headers: dict[str, str],
) -> dict[str, Any]:
    qs = dict(parse_qsl(query, keep_blank_values=True)) or None
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": qs,
        "multiValueQueryStringParameters": {k: [v] for k, v in qs.items()} if qs else None,
        "pathParameters": params or None,
        "stageVariables": None,
        "requestContext": {
            "resourcePath": route.path,
            "httpMethod": method,
            "path": path,
            "stage": "local",
            "requestId": str(uuid.uuid4()),
            "identity": {
                "sourceIp": "127.0.0.1",
                "userArn": "arn:aws:iam::000000000000:user/local",
            },
            "requestTimeEpoch": int(time.time() * 1000),
        },
        "body": body or None,
        "isBase64Encoded": False,
    }


def merged_openapi(routes: list[Route]) -> dict[str, Any]:
    """One OpenAPI document from the handlers' own resolvers (their models, their routes)."""
    doc: dict[str, Any] | None = None
    seen: set[str] = set()
    for route in routes:
        if route.function in seen:
            continue
        seen.add(route.function)
        module = load_function_module(
            route.code_uri, route.handler.rpartition(".")[0], route.function
        )
        part = json.loads(
            module.app.get_openapi_json_schema(
                title="Execution engine API",
                version="1.0.0",
                description="Evaluate trading strategies bar by bar; see README.md.",
            )
        )
        if doc is None:
            doc = part
            continue
        doc.setdefault("paths", {}).update(part.get("paths", {}))
        schemas = doc.setdefault("components", {}).setdefault("schemas", {})
        schemas.update(part.get("components", {}).get("schemas", {}))
    return doc or {
        "openapi": "3.1.0",
        "info": {"title": "Execution engine API", "version": "1.0.0"},
        "paths": {},
    }


def make_server(host: str, port: int) -> ThreadingHTTPServer:
    routes = api_routes()
    handlers = {r.function: r.load_handler() for r in routes}
    # One warm container per function: Lambda never runs two invocations in one container at
    # once, and the handlers' Powertools logger and metrics are per container (module state).
    containers = {function: threading.Lock() for function in handlers}
    openapi = json.dumps(merged_openapi(routes)).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        _head_only = False

        def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not self._head_only:
                self.wfile.write(body)

        def _dispatch(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
            if method == "GET" and url.path == "/openapi.json":
                self._send(200, openapi)
                return
            for route in routes:
                params = route.match(method, url.path)
                if params is None:
                    continue
                headers = {k: v for k, v in self.headers.items()}
                event = proxy_event(route, method, url.path, params, url.query, body, headers)
                with containers[route.function]:
                    answer = handlers[route.function](event, _Context(route.function))
                payload = answer.get("body") or ""
                self._send(int(answer.get("statusCode", 500)), payload.encode())
                return
            error = {
                "code": "route_not_found",
                "message": f"no route for {method} {url.path}",
                "details": [],
            }
            self._send(404, json.dumps(error).encode())

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def do_PUT(self) -> None:
            self._dispatch("PUT")

        def do_DELETE(self) -> None:
            self._dispatch("DELETE")

        def do_PATCH(self) -> None:
            self._dispatch("PATCH")

        def do_OPTIONS(self) -> None:
            self._dispatch("OPTIONS")

        def do_TRACE(self) -> None:
            self._dispatch("TRACE")

        def do_HEAD(self) -> None:
            # as GET, without a body (HTTP says so); unknown routes still answer JSON headers
            self._head_only = True
            try:
                self._dispatch("GET")
            finally:
                self._head_only = False

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the handlers log structured JSON already

    return ThreadingHTTPServer((host, port), Handler)
