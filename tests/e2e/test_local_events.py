"""`make dev` with WEBHOOK_URL: the local stack delivers the order events of each commit to the
webhook, signed with WEBHOOK_SECRET, retrying a 5xx; a dry run delivers nothing; and
`python -m engine events tail` prints the same events."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from engine.adapters.events.wire import verify

from tests.e2e.conftest import REPO, _free_port

pytestmark = pytest.mark.e2e

SECRET = "e2e-secret"
HOOK_PORT = _free_port()
STACK_ENV = {
    "WEBHOOK_URL": f"http://127.0.0.1:{HOOK_PORT}/hook",
    "WEBHOOK_SECRET": SECRET,
    "WEBHOOK_RETRY_BASE_SECONDS": "0.2",
}
STRATEGY = {
    "strategy_id": "events-e2e",
    "name": "events",
    "assets": ["BTC/USDT"],
    "timeframe": "1h",
    "entry": {"left": "volume", "op": ">", "right": 0},
    "execution_config": {
        "stop_loss": {"type": "percent", "value": 0.02},
        "take_profit": {"type": "percent", "value": 0.04},
    },
}


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[bytes, str]] = []
    answered_503 = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if not Receiver.answered_503:  # the first delivery fails: it must be retried
            Receiver.answered_503 = True
            self.send_response(503)
        else:
            Receiver.received.append((body, self.headers.get("X-Signature-256", "")))
            self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def hook() -> Iterator[type[Receiver]]:
    server = HTTPServer(("127.0.0.1", HOOK_PORT), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Receiver
    server.shutdown()


def _wait_for(count: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while len(Receiver.received) < count and time.monotonic() < deadline:
        time.sleep(0.1)


def test_committed_events_reach_the_webhook_signed_and_tail_prints_them(
    hook: type[Receiver], stack: dict[str, Any], tmp_path: Path
) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(STRATEGY))
    subprocess.run(
        [sys.executable, "-m", "engine", "strategies", "put", str(path)],
        env=stack["env"],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    dry = requests.post(f"{stack['base']}/evaluate/events-e2e?persist=false", timeout=60)
    assert dry.status_code == 200 and dry.json()["orders"]
    _wait_for(1, 3)
    assert Receiver.received == [] and not Receiver.answered_503  # a dry run: nothing
    result = requests.post(f"{stack['base']}/evaluate/events-e2e", timeout=60).json()
    assert result["persisted"]
    _wait_for(5, 30)
    events = [json.loads(body) for body, _ in Receiver.received]
    assert [e["type"] for e in events] == [
        "position.opened",
        "order.created",
        "order.filled",
        "order.created",
        "order.created",
    ]
    assert Receiver.answered_503  # the first was refused once, then delivered
    for body, signature in Receiver.received:
        assert verify(body, SECRET, signature)
    assert {e["data"].get("order_id") for e in events[1:]} == {
        o["order_id"] for o in result["orders"]
    }
    tail = subprocess.Popen(
        [sys.executable, "-m", "engine", "events", "tail", "--from-start"],
        env=stack["env"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    guard = threading.Timer(60, tail.terminate)  # never hang on a tail that prints less
    guard.start()
    try:
        assert tail.stdout is not None
        lines = [tail.stdout.readline() for _ in range(5)]
    finally:
        guard.cancel()
        tail.terminate()
        tail.wait(timeout=10)
    assert [json.loads(line)["id"] for line in lines] == [e["id"] for e in events]
