"""Concurrent commits over HTTP against the local stack keep DynamoDB's guarantee (issue 10).

Rounds of 50 requests at once, by id and bulk mixed, on one strategy; before each round a new
bar. The strategy acts on every bar: the previous position's stop fills (every bar touches
it), its take-profit is cancelled, and a new position enters with its two resting orders. Full
table scans afterwards must show one entry per bar, every position with exactly its three
orders in the states that go together, and one state version per committed bar: no lost fill,
no half-written evaluation, no double commit.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import boto3
import pytest
import requests
from engine.adapters.dynamodb.candles import pack, period_start
from engine.adapters.dynamodb.models import market_key
from engine.core.candles import Candles

from tests.e2e.test_local_stack import cli, scan_all

pytestmark = pytest.mark.e2e

H = 3_600_000
STRATEGY_ID = "concurrent-stops"
ASSET = "CONC/USDT"
HISTORY = 30  # bars before the first round
ROUNDS = 4
REQUESTS_PER_ROUND = 50

STRATEGY = {
    "strategy_id": STRATEGY_ID,
    "name": "enters every bar, stopped out the next",
    "assets": [ASSET],
    "timeframe": "1h",
    "entry": {"left": "close", "op": ">", "right": 0},
    "execution_config": {
        "position_sizing": {"type": "fixed_quantity", "value": 1},
        "stop_loss": {"type": "percent", "value": 0.01},
        "take_profit": {"type": "percent", "value": 0.01},
    },
}


def bar(open_ms: int, n: int) -> tuple[int, float, float, float, float, float]:
    close = 100.0 + n  # every bar's range (±2 %) touches the last one's stop and target
    return (open_ms, close, close * 1.02, close * 0.98, close, 10.0)


def candle_items(bars: list[tuple[int, float, float, float, float, float]]) -> list[dict[str, Any]]:
    """The candle table's packed items holding `bars` (docs/storage.md), written whole: this
    test is the only writer of its market, so no read-merge is needed."""
    by_period: dict[int, list[tuple[int, float, float, float, float, float]]] = defaultdict(list)
    for row in bars:
        by_period[period_start(row[0], "1h")].append(row)
    return [
        {
            "market": {"S": market_key(ASSET, "1h")},
            "open_time": {"N": str(start)},
            "bars": {"N": str(len(rows))},
            "data": {"B": pack(Candles.from_rows(rows))},
            "revision": {"N": str(len(bars))},
        }
        for start, rows in by_period.items()
    ]


def test_concurrent_mixed_commits_keep_one_evaluation_per_bar(
    stack: dict[str, Any], tmp_path: Any
) -> None:
    strategy_file = tmp_path / "strategy.json"
    strategy_file.write_text(__import__("json").dumps(STRATEGY))
    put = cli(stack, "strategies", "put", str(strategy_file))
    assert put.returncode == 0, put.stderr

    db = boto3.client(
        "dynamodb",
        endpoint_url=stack["db"],
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    candles_table = next(t for t in db.list_tables()["TableNames"] if "candle" in t)
    # The newest bar of the last round is the last closed hour: stale data warns locally,
    # so the earlier rounds evaluate older bars.
    last_open = (int(time.time() * 1000) // H - 1) * H
    first_open = last_open - (HISTORY + ROUNDS - 1) * H
    bars = [bar(first_open + n * H, n) for n in range(HISTORY)]
    for item in candle_items(bars):
        db.put_item(TableName=candles_table, Item=item)

    base = stack["base"]
    by_id = f"{base}/evaluate/{STRATEGY_ID}"
    bulk = f"{base}/evaluate/bulk"

    def call(kind: int) -> tuple[int, Any]:
        if kind % 5 == 4:  # a dry run among them: it must write nothing
            answer = requests.post(by_id, params={"persist": "false"}, timeout=60)
        elif kind % 2:
            answer = requests.post(by_id, timeout=60)
        else:
            answer = requests.post(bulk, json={"strategy_ids": [STRATEGY_ID]}, timeout=60)
        body = answer.json()
        if answer.url.endswith("/bulk") and answer.status_code == 200:
            body = body["results"][0]  # a bulk result's error counts as its own answer
            if "error" in body:
                return 409 if body["error"]["code"] == "concurrent_evaluation" else 500, body
        return answer.status_code, body

    answers: list[tuple[int, Any]] = []
    with ThreadPoolExecutor(REQUESTS_PER_ROUND) as pool:
        for round_ in range(ROUNDS):
            n = HISTORY + round_
            bars.append(bar(first_open + n * H, n))
            for item in candle_items(bars):
                db.put_item(TableName=candles_table, Item=item)
            start = threading.Barrier(REQUESTS_PER_ROUND)

            def together(kind: int, start: threading.Barrier = start) -> tuple[int, Any]:
                start.wait()
                return call(kind)

            answers += pool.map(together, range(REQUESTS_PER_ROUND))

    statuses = Counter(status for status, _ in answers)
    assert set(statuses) <= {200, 409}, (
        statuses,
        [a for a in answers if a[0] not in (200, 409)][:3],
    )
    for status, body in answers:
        if status == 409:
            assert (body.get("error") or body)["code"] == "concurrent_evaluation", body
    committed_bars = {
        body["bar"] for status, body in answers if status == 200 and body.get("persisted")
    }
    assert len(committed_bars) == ROUNDS

    tables = scan_all(stack["db"])

    def items(kind: str) -> list[dict[str, Any]]:
        name = next(t for t in tables if kind in t)
        return [i for i in tables[name] if i["strategy_id"]["S"] == STRATEGY_ID]

    positions = items("position")
    orders = items("order")
    entries = Counter(int(p["entry_time"]["N"]) for p in positions)
    assert all(count == 1 for count in entries.values()), entries  # one entry per bar
    expected = {first_open + (HISTORY + r) * H for r in range(ROUNDS)}
    assert set(entries) == expected

    by_position: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for order in orders:
        by_position[order["position_id"]["S"]].append(order)
    assert set(by_position) == {p["position_id"]["S"] for p in positions}
    opened = [p for p in positions if p["status"]["S"] == "open"]
    assert len(opened) == 1 and int(opened[0]["entry_time"]["N"]) == max(expected)
    for position in positions:
        kinds = {
            o["type"]["S"]: o["status"]["S"] for o in by_position[position["position_id"]["S"]]
        }
        assert len(by_position[position["position_id"]["S"]]) == 3, by_position
        if position["status"]["S"] == "open":
            assert kinds == {"market": "filled", "stop_loss": "open", "take_profit": "open"}
            assert "exit_time" not in position
        else:  # the stop wins a bar that touches both
            assert kinds == {"market": "filled", "stop_loss": "filled", "take_profit": "cancelled"}
            assert position["exit_reason"]["S"] == "stop_loss"
            assert int(position["exit_time"]["N"]) == int(position["entry_time"]["N"]) + H

    strategies = next(t for t in tables if "strateg" in t)
    item = next(i for i in tables[strategies] if i["strategy_id"]["S"] == STRATEGY_ID)
    assert int(item["state_version"]["N"]) == ROUNDS  # one commit per bar, none twice
