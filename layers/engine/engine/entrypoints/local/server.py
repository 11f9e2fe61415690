"""A small HTTP server that turns requests into API Gateway REST proxy events.

It serves exactly the routes of template.yaml, by invoking each route's own Lambda handler,
plus the merged OpenAPI document of the three handlers at /openapi.json.
"""

from __future__ import annotations

import json
import threading
import time
import traceback
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

from engine.entrypoints.local.template import Route, api_routes, load_function_module


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
    # as API Gateway: the single-value map holds each name's last value, the multi-value map all
    pairs = parse_qsl(query, keep_blank_values=True)
    multi: dict[str, list[str]] = {}
    for name, value in pairs:
        multi.setdefault(name, []).append(value)
    qs = {name: values[-1] for name, values in multi.items()} or None
    return {
        "resource": route.path,
        "path": path,
        "httpMethod": method,
        "headers": headers,
        "multiValueHeaders": {k: [v] for k, v in headers.items()},
        "queryStringParameters": qs,
        "multiValueQueryStringParameters": multi or None,
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


# What the local server answers itself, as API Gateway would, in the API's error shape.
_REFUSALS = {
    400: ("bad_request", "the request is not valid HTTP"),
    404: ("route_not_found", "no such route"),
    405: ("method_not_allowed", "the route does not take this method"),
    408: ("request_timeout", "the request did not arrive in time"),
    411: ("length_required", "a request body needs a Content-Length"),
    413: ("payload_too_large", "request body too large"),
    414: ("uri_too_long", "the request line is too long"),
    431: ("request_header_fields_too_large", "the request headers are too large"),
    502: ("internal_error", "the function failed; see the stack's log"),
}
# API Gateway refuses larger payloads itself (10 MB); the local server does not read them.
MAX_REQUEST_BYTES = 10 * 1024 * 1024


def error_body(status: int, message: str | None = None) -> bytes:
    code, default = _REFUSALS.get(status, ("bad_request", "the request was refused"))
    return json.dumps({"code": code, "message": message or default, "details": []}).encode()


class LocalHTTPServer(ThreadingHTTPServer):
    # a burst of concurrent clients must queue, not be reset (the default backlog is 5)
    request_queue_size = 128
    daemon_threads = True


def request_line(method: str, path: str, status: int, elapsed_s: float, at_s: float) -> str:
    """One request as `make dev` logs it: UTC time (Z), method, path, status, milliseconds."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at_s)) + f".{int(at_s % 1 * 1000):03d}Z"
    return f"{stamp} {method} {path} {status} {elapsed_s * 1000:.0f} ms"


def make_server(host: str, port: int, log: TextIO | None = None) -> ThreadingHTTPServer:
    """The API on (host, port); with `log`, one line per request is written there."""
    routes = api_routes()
    handlers = {r.function: r.load_handler() for r in routes}
    # One warm container per function: Lambda never runs two invocations in one container at
    # once, and the handlers' Powertools logger and metrics are per container (module state).
    containers = {function: threading.Lock() for function in handlers}
    openapi = json.dumps(merged_openapi(routes)).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        _head_only = False
        _status = 0
        _started = 0.0
        _at = 0.0

        def _send(
            self,
            status: int,
            body: bytes,
            content_type: str = "application/json",
            headers: dict[str, str] | None = None,
        ) -> None:
            self._status = status
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self._log_line()  # before the body: a client that has its answer finds the line
            if not self._head_only:
                self.wfile.write(body)

        def _log_line(self) -> None:
            if log is not None:
                elapsed = time.perf_counter() - self._started
                path = urlsplit(self.path).path
                print(
                    request_line(self.command, path, self._status, elapsed, self._at),
                    file=log,
                    flush=True,
                )

        def send_error(
            self, code: int, message: str | None = None, explain: str | None = None
        ) -> None:
            """http.server's own refusals (unknown method, 414, 431, bad request line) in JSON,
            not its HTML page."""
            status = 405 if code == 501 else code  # an unknown method, on any route
            self._status = status
            try:
                self.send_response(status, message)
                body = error_body(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                if self.command != "HEAD" and status >= 200 and status not in (204, 304):
                    self.wfile.write(body)
            finally:
                self.close_connection = True

        def _body(self) -> str | None:
            """The request body; None when it was refused (the answer is sent)."""
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                self._refuse(411, "chunked bodies are not accepted; send a Content-Length")
                return None
            raw = self.headers.get("Content-Length") or "0"
            if not raw.strip().isdigit():
                self._refuse(400, f"Content-Length {raw!r} is not a number of bytes")
                return None
            length = int(raw)
            if length > MAX_REQUEST_BYTES:
                self._refuse(413, f"request body exceeds {MAX_REQUEST_BYTES} bytes")
                return None
            return self.rfile.read(length).decode("utf-8", errors="replace") if length else ""

        def _refuse(self, status: int, message: str) -> None:
            self.close_connection = True
            self._send(status, error_body(status, message))

        def _dispatch(self, method: str) -> None:
            self._started, self._at = time.perf_counter(), time.time()
            self._route(method)

        def _route(self, method: str) -> None:
            url = urlsplit(self.path)
            body = self._body()
            if body is None:
                return
            if method == "GET" and url.path == "/openapi.json":
                self._send(200, openapi)
                return
            for route in routes:
                params = route.match(method, url.path)
                if params is None:
                    continue
                headers = {k: v for k, v in self.headers.items()}
                event = proxy_event(route, method, url.path, params, url.query, body, headers)
                try:
                    with containers[route.function]:
                        answer = handlers[route.function](event, _Context(route.function))
                except Exception:
                    # Lambda reports a function error; API Gateway answers 502
                    traceback.print_exc()
                    self._send(502, error_body(502))
                    return
                payload = answer.get("body") or ""
                self._send(int(answer.get("statusCode", 500)), payload.encode())
                return
            if any(route.pattern.match(url.path) for route in routes):
                allowed = sorted({r.method for r in routes if r.pattern.match(url.path)})
                self._send(
                    405,
                    error_body(405, f"{url.path} takes {', '.join(allowed)}, not {method}"),
                    headers={"Allow": ", ".join(allowed)},
                )
                return
            self._send(404, error_body(404, f"no route for {method} {url.path}"))

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

    return LocalHTTPServer((host, port), Handler)
