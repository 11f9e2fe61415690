"""moto's DynamoDB server for the local stack, answering one request at a time.

moto's backends are not thread-safe: two transactions at once (a by-id commit and a bulk
commit, say) can both pass their conditions, or lose an item ("dictionary changed size during
iteration"). DynamoDB itself applies each request atomically and a transaction's conditions
together with its writes; serializing every request through one lock gives the local stack that
same guarantee, whichever functions and threads send them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Serialized:
    """A WSGI app that lets one request at a time through `app`, its answer read whole."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        with self.lock:
            answer = self.app(environ, start_response)
            try:
                return [b"".join(answer)]
            finally:
                close = getattr(answer, "close", None)
                if close is not None:
                    close()


class _QuietHandler(MotoRequestHandler):
    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass  # one line per DynamoDB call drowns the handlers' own logs


class SerializedMotoServer(ThreadedMotoServer):
    """ThreadedMotoServer whose requests are applied one at a time (see the module doc)."""

    def _server_entry(self) -> None:
        app = Serialized(DomainDispatcherApplication(create_backend_app))
        self._server = make_server(
            self._ip_address, self._port, app, True, request_handler=_QuietHandler
        )
        self._server_ready_event.set()
        self._server.serve_forever()
