"""Two functions' resolvers in one process, resolving at the same time, as the local stack runs
them (one thread per container): each must read its own request, never the other's."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from engine.entrypoints.http import build_resolver
from pydantic import BaseModel

ROUNDS = 1500


class Ids(BaseModel):
    ids: list[str]


def proxy_event(path: str, body: str | None) -> dict[str, Any]:
    return {
        "resource": path,
        "path": path,
        "httpMethod": "POST",
        "headers": {"content-type": "application/json"},
        "multiValueHeaders": {},
        "queryStringParameters": None,
        "multiValueQueryStringParameters": None,
        "pathParameters": None,
        "stageVariables": None,
        "requestContext": {"resourcePath": path, "httpMethod": "POST", "path": path},
        "body": body,
        "isBase64Encoded": False,
    }


@pytest.fixture
def busy_switching() -> Iterator[None]:
    """Threads switch every microsecond, so the two resolves interleave often."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(before)


def test_concurrent_resolvers_each_read_their_own_event(busy_switching: None) -> None:
    with_body, without_body = build_resolver(), build_resolver()

    @with_body.post("/bulk")
    def count(body: Ids) -> dict[str, int]:
        return {"count": len(body.ids)}

    @without_body.post("/by-id")
    def evaluate() -> dict[str, str]:
        return {"path": without_body.current_event.path}

    answers: dict[str, list[tuple[int, str]]] = {"/bulk": [], "/by-id": []}

    def resolve(app: Any, path: str, body: str | None) -> None:
        for _ in range(ROUNDS):
            answer = app.resolve(proxy_event(path, body), None)
            answers[path].append((answer["statusCode"], answer["body"]))

    threads = [
        threading.Thread(target=resolve, args=(with_body, "/bulk", json.dumps({"ids": ["a"]}))),
        threading.Thread(target=resolve, args=(without_body, "/by-id", None)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert set(answers["/bulk"]) == {(200, '{"count":1}')}
    assert set(answers["/by-id"]) == {(200, '{"path":"/by-id"}')}
