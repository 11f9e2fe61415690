"""moto's DynamoDB for the local stack (and the tests), answering one request at a time.

moto's backend is not thread-safe: a transaction snapshots the tables to restore them if it
fails, so two at once can undo each other's writes, both pass the same condition, or fail with
"dictionary changed size during iteration". DynamoDB applies each request atomically and a
transaction's conditions together with its writes; running every DynamoDB request through one
lock gives moto that same guarantee, whichever functions and threads send them. Threads still
interleave between requests (load, evaluate, commit), where concurrent work races in AWS too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server


@contextmanager
def dynamodb_requests_atomic() -> Iterator[None]:
    """Within the block, moto (server or in-process) applies one DynamoDB request at a time."""
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action
    lock = threading.RLock()

    def atomic_call_action(self: DynamoHandler) -> Any:
        with lock:
            return original(self)

    DynamoHandler.call_action = atomic_call_action  # type: ignore[method-assign]
    try:
        yield
    finally:
        DynamoHandler.call_action = original  # type: ignore[method-assign]


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # one line per DynamoDB call drowns the handlers' own logs


class QuietMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer without a log line per request."""

    def _server_entry(self) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=_QuietHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
