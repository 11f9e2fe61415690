"""docs/events.md and docs/schemas/events: the schema files are the models' schemas, events
and the documented example validate against them, and the documented 20-line subscriber
really verifies signatures and dedupes by id."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from engine.adapters.events.schemas import event_schema, schema_files
from engine.adapters.events.webhook import WebhookSender
from engine.core.events import EVENT_TYPES, GuardTrip, derive_events
from engine.core.state import Changes, CooldownState, ExecutionState
from jsonschema import Draft202012Validator

from tests.support.core import EXIT_ON_LOW_VOLUME, SIGNAL, Driver, candles, flat_bars, make_strategy
from tests.support.template_tables import ROOT

DOC = ROOT / "docs" / "events.md"
SCHEMAS = ROOT / "docs" / "schemas" / "events"


def _validator(event_type: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{event_type}.json").read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def test_the_schema_files_are_the_models_schemas() -> None:
    files = {p.name: p.read_text(encoding="utf-8") for p in SCHEMAS.glob("*.json")}
    assert files == schema_files(), (
        "run: python -m engine.adapters.events.schemas docs/schemas/events"
    )
    assert sorted(p.removesuffix(".json") for p in files) == sorted(EVENT_TYPES)


def _events_of_every_kind() -> list[dict[str, Any]]:
    strategy = make_strategy(
        exit=EXIT_ON_LOW_VOLUME,
        execution_config={
            "stop_loss": {"type": "percent", "value": 0.02},
            "take_profit": {"type": "percent", "value": 0.04},
            "cooldown_config": {"1h": {"short_loss_limit": 1, "short_window_bars": 3}},
        },
    )
    bars = flat_bars(4, b1=SIGNAL, b2=(100.0, 100.0, 97.0, 99.0, 1.0))
    driver = Driver(strategy, candles(bars))
    out = []
    for index, version in ((1, 1), (2, 2)):
        before = driver.state
        result = driver.at(index)
        out += derive_events(before, result.changes, version=version, committed_ms=1)
    out += derive_events(
        ExecutionState(strategy_id="s"),
        Changes(cooldowns=[CooldownState(asset="A")]),
        version=3,
        committed_ms=1,
        guard_trips=[GuardTrip(guard="max_drawdown", bar_ms=0)],
    )
    return [e.model_dump(mode="json") for e in out]


def test_derived_events_of_every_kind_validate_and_a_wrong_one_does_not() -> None:
    events = _events_of_every_kind()
    kinds = {e["type"] for e in events}
    assert kinds >= {
        "position.opened",
        "position.closed",
        "order.created",
        "order.filled",
        "order.cancelled",
        "cooldown.tripped",
        "guard.tripped",
    }
    for event in events:
        _validator(event["type"]).validate(event)
    filled = next(e for e in events if e["type"] == "order.filled")
    assert list(_validator("position.opened").iter_errors(filled))  # another type's schema
    broken = {**filled, "data": {**filled["data"], "status": "pending"}}
    assert list(_validator("order.filled").iter_errors(broken))
    assert list(_validator("order.filled").iter_errors({**filled, "version": 2}))


def test_the_documented_example_is_a_valid_event() -> None:
    text = DOC.read_text(encoding="utf-8")
    example = json.loads(text.split("## The event", 1)[1].split("```json", 1)[1].split("```")[0])
    _validator(example["type"]).validate(example)
    assert event_schema("order.filled")["properties"]["version"] == {
        "const": 1,
        "title": "Version",
    }


def _subscriber_code() -> str:
    text = DOC.read_text(encoding="utf-8")
    block = text.split("<!-- subscriber:start -->", 1)[1].split("<!-- subscriber:end -->")[0]
    return block.split("```python", 1)[1].split("```", 1)[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_the_documented_subscriber_checks_signatures_and_acts_once_per_id(
    tmp_path: Path,
) -> None:
    code = _subscriber_code()
    lines = [line for line in code.splitlines() if line.strip()]
    assert len(lines) <= 20
    script = tmp_path / "subscriber.py"
    script.write_text(code, encoding="utf-8")
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(script)],
        env={"WEBHOOK_SECRET": "doc-secret", "PORT": str(port), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        good = WebhookSender(url, "doc-secret", timeout_s=2)
        events = _events_of_every_kind()[:2]
        deadline = time.monotonic() + 10
        while good.deliver(events[0]) != "delivered":  # the server is starting
            assert time.monotonic() < deadline, "the subscriber did not start"
            time.sleep(0.05)
        assert good.deliver(events[0]) == "delivered"  # a redelivery: taken, not acted on
        assert good.deliver(events[1]) == "delivered"
        forged = WebhookSender(url, "not-the-secret", timeout_s=2)
        assert forged.deliver(events[1]) == "refused"  # 401
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=10)
    printed = [line.split(" ", 1)[0] for line in out.splitlines()]
    assert printed == [events[0]["type"], events[1]["type"]]


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_type_is_in_the_docs_table(event_type: str) -> None:
    assert re.search(rf"^\| `{re.escape(event_type)}` \|", DOC.read_text(), re.MULTILINE)
