"""End to end over local HTTP: the local stack (`python -m engine.entrypoints.local`), the CLI, curl-like
requests. The same handler code the Lambdas run answers every request."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
H = 3_600_000


def cli(stack: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        env=stack["env"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def scan_all(endpoint: str) -> dict[str, list[dict[str, Any]]]:
    client = boto3.client(
        "dynamodb",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="local",
        aws_secret_access_key="local",
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for name in sorted(client.list_tables()["TableNames"]):
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"TableName": name}
        while True:
            page = client.scan(**kwargs)
            items += page["Items"]
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        out[name] = sorted(items, key=lambda i: json.dumps(i, sort_keys=True, default=repr))
    return out


STRATEGY = {
    "strategy_id": "e2e-volume-spike",
    "name": "enter on a volume spike",
    "assets": ["E2E/USDT"],
    "timeframe": "1h",
    "indicators": {"sma": {"fn": "SMA", "params": {"timeperiod": 5}}},
    "entry": {
        "all": [
            {"left": "volume", "op": ">", "right": 50},
            {"left": "close", "op": ">", "right": 0},
        ]
    },
    "execution_config": {
        "position_sizing": {"type": "fixed_quantity", "value": 2},
        "stop_loss": {"type": "percent", "value": 0.05},
        "take_profit": {"type": "risk_reward", "ratio": 2},
        "cooldown_config": {"1h": {"short_loss_limit": 1, "short_window_bars": 3}},
    },
}


def write_candles(path: Path, rows: list[tuple[int, float, float, float, float, float]]) -> Path:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["time", "open", "high", "low", "close", "volume"])
        writer.writerows(rows)
    return path


def test_the_whole_life_of_a_position(stack: dict[str, Any], tmp_path: Path) -> None:
    base = stack["base"]
    strategy_file = tmp_path / "strategy.json"
    strategy_file.write_text(json.dumps(STRATEGY))
    put = cli(stack, "strategies", "put", str(strategy_file))
    assert put.returncode == 0, put.stderr
    listed = cli(stack, "strategies", "list")
    assert "e2e-volume-spike" in listed.stdout

    # 30 closed hourly bars ending two hours ago, the newest with a volume spike
    current_hour = int(time.time() * 1000) // H * H
    first = current_hour - 31 * H
    rows = [(first + i * H, 100.0, 101.0, 99.0, 100.0, 10.0) for i in range(30)]
    rows[-1] = (rows[-1][0], 100.0, 101.0, 99.0, 100.0, 99.0)
    imported = cli(
        stack,
        "candles",
        "import",
        "--asset",
        "E2E/USDT",
        "--timeframe",
        "1h",
        str(write_candles(tmp_path / "c.csv", rows)),
    )
    assert imported.returncode == 0, imported.stderr

    # a dry run first: every table stays exactly as it was
    before = scan_all(stack["db"])
    dry = requests.post(
        f"{base}/evaluate/e2e-volume-spike", params={"persist": "false"}, timeout=30
    )
    assert dry.status_code == 200, dry.text
    assert dry.json()["persisted"] is False and len(dry.json()["orders"]) == 3
    assert scan_all(stack["db"]) == before

    # entry at close 100 with stop 95 and target 100 + 2*5 = 110
    entered = requests.post(f"{base}/evaluate/e2e-volume-spike", timeout=30).json()
    assert entered["persisted"] is True
    kinds = {(o["side"], o["type"], o["status"], o["price"]) for o in entered["orders"]}
    assert kinds == {
        ("enter_long", "market", "filled", 100.0),
        ("exit_long", "stop_loss", "open", 95.0),
        ("exit_long", "take_profit", "open", 110.0),
    }
    assert entered["positions"][0]["quantity"] == 2

    # evaluating the same bar again creates nothing
    again = requests.post(f"{base}/evaluate/e2e-volume-spike", timeout=30).json()
    assert {o["order_id"] for o in again["orders"]} == {
        o["order_id"] for o in entered["orders"] if o["status"] == "open"
    }

    # a later candle falls through the stop: the stop fills at 95, the trade loses 10
    later = [(current_hour - H, 99.0, 99.5, 90.0, 92.0, 10.0)]
    cli(
        stack,
        "candles",
        "import",
        "--asset",
        "E2E/USDT",
        "--timeframe",
        "1h",
        str(write_candles(tmp_path / "d.csv", later)),
    )
    stopped = requests.post(f"{base}/evaluate/e2e-volume-spike", timeout=30).json()
    (trade,) = stopped["closed_trades"]
    assert (
        trade["exit_reason"] == "stop_loss"
        and trade["exit_price"] == 95.0
        and trade["pnl"] == -10.0
    )
    (cooldown,) = stopped["cooldowns"]
    assert (
        cooldown["active"] is True
        and cooldown["tier"] == "short"
        and cooldown["remaining_bars"] == 4
    )
    assert stopped["positions"] == []
    assert {(o["type"], o["status"]) for o in stopped["orders"]} == {
        ("stop_loss", "filled"),
        ("take_profit", "cancelled"),
    }


def test_unknown_strategy_is_404(stack: dict[str, Any]) -> None:
    answer = requests.post(f"{stack['base']}/evaluate/no-such-strategy", timeout=30)
    assert answer.status_code == 404
    assert answer.json()["code"] == "strategy_not_found"


def test_invalid_draft_is_422_naming_each_problem(stack: dict[str, Any]) -> None:
    draft = {
        **STRATEGY,
        "indicators": {"rsi": {"fn": "RSI", "params": {"timeperiod": 14, "speed": 2}}},
    }
    draft["entry"] = {"left": "rsx", "op": "<", "right": 30}
    answer = requests.post(f"{stack['base']}/evaluate", json={"strategy": draft}, timeout=30)
    assert answer.status_code == 422
    body = answer.json()
    assert body["code"] == "invalid_request"
    paths = {d["path"] for d in body["details"]}
    assert "strategy.indicators.rsi.params.speed" in paths


def test_draft_with_legacy_keys_warns(stack: dict[str, Any]) -> None:
    draft = json.loads(json.dumps(STRATEGY))
    draft["assets"] = ["BTC/USDT"]  # the demo seed's candles
    config = draft["execution_config"]
    del config["cooldown_config"]
    config["cooldown_bars"] = 4
    before = scan_all(stack["db"])
    answer = requests.post(f"{stack['base']}/evaluate", json={"strategy": draft}, timeout=30)
    assert answer.status_code == 200, answer.text
    assert "deprecated_cooldown_keys" in {w["code"] for w in answer.json()["warnings"]}
    assert scan_all(stack["db"]) == before  # a draft never writes


def test_bulk_reports_per_strategy(stack: dict[str, Any]) -> None:
    answer = requests.post(
        f"{stack['base']}/evaluate/bulk",
        json={"strategy_ids": ["demo-rsi-btc", "ghost"], "persist": False},
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["summary"]["requested"] == 2 and body["summary"]["failed"] == 1
    assert body["results"][1] == {
        "strategy_id": "ghost",
        "error": {
            "code": "strategy_not_found",
            "message": "no strategy with id 'ghost'",
            "details": [],
        },
    }


def test_openapi_document_lists_the_three_routes(stack: dict[str, Any]) -> None:
    doc = requests.get(f"{stack['root']}/openapi.json", timeout=30).json()
    assert set(doc["paths"]) == {
        "/api/v1/execution/evaluate/{strategy_id}",
        "/api/v1/execution/evaluate",
        "/api/v1/execution/evaluate/bulk",
    }


def test_malformed_json_is_400(stack: dict[str, Any]) -> None:
    answer = requests.post(f"{stack['base']}/evaluate", data="{not json", timeout=30)
    assert answer.status_code == 400
    problem = (
        "request body is not valid JSON: Expecting property name enclosed in double quotes "
        "at line 1 column 2"
    )
    assert answer.json() == {
        "code": "malformed_json",
        "message": problem,
        "details": [{"path": "body", "message": problem}],
    }
