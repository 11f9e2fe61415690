"""The local server runs each function as one warm Lambda container: one invocation at a time."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from engine.entrypoints.local import server as local_server
from engine.entrypoints.local.template import Route


def test_a_function_never_runs_two_invocations_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    running: dict[str, int] = {}
    most: dict[str, int] = {}
    lock = threading.Lock()

    def load_handler(route: Route) -> Any:
        def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
            with lock:
                running[route.function] = running.get(route.function, 0) + 1
                most[route.function] = max(most.get(route.function, 0), running[route.function])
            time.sleep(0.05)
            with lock:
                running[route.function] -= 1
            return {"statusCode": 200, "body": "{}"}

        return handler

    monkeypatch.setattr(Route, "load_handler", load_handler)
    httpd = local_server.make_server("127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}/api/v1/execution"
    try:
        urls = [f"{base}/evaluate/s{n}" for n in range(4)] + [f"{base}/evaluate"] * 4
        with ThreadPoolExecutor(len(urls)) as pool:
            answers = list(pool.map(lambda url: requests.post(url, json={}, timeout=10), urls))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [a.status_code for a in answers] == [200] * len(urls)
    # four requests each to two functions, all at once: each function took them one by one
    assert most == {"EvaluateByIdFunction": 1, "EvaluateByObjectFunction": 1}


def test_a_burst_of_clients_queues_rather_than_being_reset() -> None:
    # 50 concurrent requests saw connection resets with http.server's default backlog of 5
    assert local_server.LocalHTTPServer.request_queue_size >= 128


def test_query_parameters_reach_the_handler_as_api_gateway_sends_them() -> None:
    route = Route("POST", "/x", "F", Path("."), "app.handler")
    event = local_server.proxy_event(route, "POST", "/x", {}, "a=1&a=2&b=", "", {})
    assert event["queryStringParameters"] == {"a": "2", "b": ""}
    assert event["multiValueQueryStringParameters"] == {"a": ["1", "2"], "b": [""]}


def test_make_dev_logs_each_request_in_one_line() -> None:
    import io
    import re
    import threading
    import urllib.error
    import urllib.request

    from engine.entrypoints.local.server import make_server, request_line

    assert (
        request_line("POST", "/x", 201, 0.0123, 0.5) == "1970-01-01T00:00:00.500Z POST /x 201 12 ms"
    )
    log = io.StringIO()
    server = make_server("127.0.0.1", 0, log=log)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json") as answer:
            assert answer.status == 200
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/nowhere?secret=1")
        except urllib.error.HTTPError as exc:
            assert exc.code == 404
    finally:
        server.shutdown()
        server.server_close()
    lines = log.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(stamp + r" GET /openapi\.json 200 \d+ ms", lines[0]), lines
    assert re.fullmatch(stamp + r" GET /nowhere 404 \d+ ms", lines[1]), lines  # no query
    assert len(lines) == 2
