"""Fault injection (issue "Faults"): DynamoDB throttling and transient errors, market data
failures, a Lambda timeout in the middle of a bulk run, a crash after a commit was sent.

Everything runs on the real storage adapters over moto's in-process DynamoDB, with an
in-memory market data provider. DynamoDB faults are injected on the botocore clients PynamoDB
uses: a `before-call` handler answers in DynamoDB's place, so the request never reaches moto
(an HTTP status and JSON body as DynamoDB sends them, turned into botocore's parsed response
by botocore's own parser: PynamoDB's error mapping and the engine's retry run unchanged), or
raises the network error botocore would raise. A fault after a request was applied (response
lost, process killed) is raised from an `after-call` handler, once moto has committed it.

moto does not implement TransactWriteItems' ClientRequestToken. The injector adds it as
DynamoDB documents it: a repeated token with the same parameters within the window is
answered with success and applies nothing; with other parameters it is refused with
IdempotentParameterMismatchException.

"Nothing half-written" is checked on whole-table scans: after a failure the failing
strategy's items are byte-for-byte what they were; after recovery every table equals what a
fault-free run wrote (the wall-clock `updated_at`/`committed_at` of strategy items aside).
The expected results come from the same scenario run without faults on fresh tables.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3
import numpy as np
import pytest
from botocore.awsrequest import AWSResponse
from botocore.endpoint import convert_to_response_dict
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from botocore.parsers import create_parser
from engine.adapters import dynamodb
from engine.adapters.dynamodb import (
    ALL_MODELS,
    DynamoRepositories,
    RetryPolicy,
    dynamo_repositories,
)
from engine.adapters.dynamodb.models import OutboxModel, StrategyModel
from engine.core.candles import Candles
from engine.core.strategy import Strategy, parse_strategy
from engine.service import execution as service_module
from engine.service.errors import EngineError, MarketDataUnavailable, StorageUnavailable
from engine.service.execution import ExecutionService
from engine.service.results import BulkFailure
from engine.service.schedule import run_scheduled_tick
from moto import mock_aws

from tests.support.aws import moto_requests_atomic, scan_tables, use_fake_aws

REGION = "us-east-1"
H = 3_600_000
T0 = 1_704_067_200_000  # 2024-01-01T00:00Z
N_BARS = 60
ATTEMPTS = 4
BASE_DELAY = 0.01
URL = f"https://dynamodb.{REGION}.amazonaws.com/"


class LambdaTimeout(BaseException):
    """Lambda killing the process: not an Exception, so nothing in the engine catches it."""


# --- market data ------------------------------------------------------------------------


def asset_candles(asset: str) -> Candles:
    """Flat hourly bars at 100 with volume spikes (entries) at bars 40 and 50.

    BTC stops out at bar 42 (a loss: cooldown bars 42..45), ETH reaches its target at bar 43,
    SOL stays open.
    """
    rows = []
    for i in range(N_BARS):
        high, low, volume = 100.5, 99.5, 1.0
        if i in (40, 50):
            volume = 10.0
        if asset == "BTC/USDT" and i == 42:
            low = 97.0
        if asset == "ETH/USDT" and i == 43:
            high = 105.0
        rows.append((T0 + i * H, 100.0, high, low, 100.0, volume))
    return Candles.from_rows(rows)


ASSETS = ("BTC/USDT", "ETH/USDT", "SOL/USDT")
CANDLES = {(asset, "1h"): asset_candles(asset) for asset in ASSETS}


class Market:
    """MarketDataProvider in memory: the bars opened by `now_ms` (the last still forming).

    `faults[pair]` sees the candles that would be returned and may raise or replace them.
    """

    def __init__(self) -> None:
        self.faults: dict[tuple[str, str], Callable[[Candles], Candles]] = {}
        self.fetches: list[tuple[str, str]] = []

    def fetch(self, asset: str, timeframe: str, bars: int, now_ms: int) -> Candles:
        pair = (asset, timeframe)
        self.fetches.append(pair)
        candles = CANDLES[pair]
        visible = candles.head(int(np.searchsorted(candles.time, now_ms, side="right")))
        fault = self.faults.get(pair)
        if fault is not None:
            visible = fault(visible)
        return visible.tail(bars + 1)


# --- strategies -------------------------------------------------------------------------


def make_strategy(sid: str, assets: Sequence[str], notional: float) -> Strategy:
    return parse_strategy(
        {
            "strategy_id": sid,
            "name": sid,
            "status": "active",
            "assets": list(assets),
            "timeframe": "1h",
            "indicators": {"sma": {"fn": "SMA", "params": {"timeperiod": 5}}},
            "entry": {
                "all": [
                    {"left": "volume", "op": ">", "right": 5},
                    {"left": "close", "op": ">=", "right": "sma"},
                ]
            },
            "execution_config": {
                "position_sizing": {"type": "fixed_notional", "value": notional},
                "stop_loss": {"type": "percent", "value": 0.02},
                "take_profit": {"type": "risk_reward", "ratio": 2.0},
                "fee_rate": 0.001,
                "cooldown_config": {
                    "1h": {
                        "short_loss_limit": 1,
                        "short_window_bars": 3,
                        "long_loss_limit": 0,
                        "long_window_bars": 0,
                    }
                },
            },
        }
    )


STRATEGIES = [
    make_strategy(sid, assets, 1000 + 100 * n)
    for n, (sid, assets) in enumerate(
        [
            ("btc-1", ["BTC/USDT"]),
            ("btc-2", ["BTC/USDT"]),
            ("btc-3", ["BTC/USDT"]),
            ("eth-1", ["ETH/USDT"]),
            ("eth-2", ["ETH/USDT"]),
            ("multi-1", ["BTC/USDT", "ETH/USDT"]),
            ("multi-2", ["ETH/USDT", "SOL/USDT"]),
            ("multi-3", ["BTC/USDT", "SOL/USDT"]),
            ("sol-1", ["SOL/USDT"]),
            ("sol-2", ["SOL/USDT"]),
        ]
    )
]
ALL_IDS = tuple(s.strategy_id for s in STRATEGIES)  # sorted: the scheduled tick's order too
NEEDS_ETH = {s.strategy_id for s in STRATEGIES if "ETH/USDT" in s.assets}
assert list(ALL_IDS) == sorted(ALL_IDS) and len(ALL_IDS) > 8  # > bulk_threshold: index path

# The clock of each step: the bar that has just closed. 40: entries; 44: BTC stopped out
# (cooldown), ETH took profit, SOL open (catch-up over 41..44); 50: entries again (the
# BTC cooldown has expired; its cooldown items are read).
STEP_NOW = (T0 + 41 * H, T0 + 45 * H, T0 + 51 * H)


# --- DynamoDB faults at the HTTP layer --------------------------------------------------


Answer = Callable[[dict[str, Any]], AWSResponse]
DDB = "com.amazonaws.dynamodb.v20120810#"


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def fake_response(status: int, body: bytes, content_type: str) -> AWSResponse:
    headers = {"x-amzn-requestid": "fault-injection", "content-type": content_type}
    return AWSResponse(URL, status, headers, _Body(body))


def parsed(response: AWSResponse, model: Any) -> tuple[AWSResponse, dict[str, Any]]:
    """What botocore's endpoint makes of `response` (botocore.endpoint._do_get_response):
    a 'before-call' handler answering this way replaces the request, which is never sent."""
    parser = create_parser(model.service_model.protocol)
    response_dict = convert_to_response_dict(response, model)
    result: dict[str, Any] = parser.parse(response_dict, model.output_shape)
    if response.status_code >= 300:
        code = result.get("Error", {}).get("Code")
        shape = model.service_model.shape_for_error_code(code) if code else None
        if shape is not None:
            result.update(parser.parse(response_dict, shape))
    return response, result


def dynamodb_error(status: int, error_type: str, message: str, **extra: Any) -> Answer:
    body = json.dumps({"__type": error_type, "message": message, **extra}).encode()
    return lambda params: fake_response(status, body, "application/x-amz-json-1.0")


def cancelled(reason: str) -> Answer:
    """TransactionCanceledException, the first item cancelled for `reason`."""

    def answer(params: dict[str, Any]) -> AWSResponse:
        reasons = [{"Code": reason, "Message": "try again shortly"}]
        reasons += [{"Code": "None"}] * (len(params["TransactItems"]) - 1)
        body = {
            "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
            "Message": f"Transaction cancelled, please refer cancellation reasons for specific "
            f"reasons [{', '.join(r['Code'] for r in reasons)}]",
            "CancellationReasons": reasons,
        }
        return fake_response(400, json.dumps(body).encode(), "application/x-amz-json-1.0")

    return answer


def network(error: type[Exception]) -> Answer:
    def answer(params: dict[str, Any]) -> AWSResponse:
        raise error(endpoint_url=URL)

    return answer


# Faults that DynamoDB (or the network) reports before anything of the request was applied.
KINDS: dict[str, Answer] = {
    "ProvisionedThroughputExceededException": dynamodb_error(
        400,
        DDB + "ProvisionedThroughputExceededException",
        "The level of configured provisioned throughput for the table was exceeded.",
    ),
    "ThrottlingException": dynamodb_error(
        400,
        "com.amazon.coral.availability#ThrottlingException",
        "Rate of requests exceeds the allowed throughput.",
    ),
    "RequestLimitExceeded": dynamodb_error(
        400, DDB + "RequestLimitExceeded", "Throughput exceeds the current throughput limit."
    ),
    "InternalServerError": dynamodb_error(500, DDB + "InternalServerError", "Internal error"),
    "ServiceUnavailable": dynamodb_error(
        503, "com.amazon.coral.availability#ServiceUnavailableException", "Service unavailable"
    ),
    "EndpointConnectionError": network(EndpointConnectionError),
    "ConnectTimeoutError": network(ConnectTimeoutError),
    "ConnectionClosedError": network(ConnectionClosedError),
    "ReadTimeoutError": network(ReadTimeoutError),
    # A 5xx from something in front of DynamoDB: botocore parses it as code "502"
    "HTTP 502 (HTML)": lambda params: fake_response(
        502, b"<html><body>502 Bad Gateway</body></html>", "text/html"
    ),
    "TransactionCanceled(ThrottlingError)": cancelled("ThrottlingError"),
    "TransactionCanceled(TransactionConflict)": cancelled("TransactionConflict"),
}
TRANSACTION_ONLY = {
    "TransactionCanceled(ThrottlingError)",
    "TransactionCanceled(TransactionConflict)",
}


@dataclass
class Fault:
    operation: str
    answer: Answer | None = None  # before the request is sent: answer in DynamoDB's place
    after: Callable[[Any], BaseException] | None = None  # applied; raise after(model)
    times: int | None = None  # the first `times` matching calls; None: every one
    match: Callable[[dict[str, Any]], bool] = lambda params: True
    hits: int = 0

    def take(self, operation: str, params: dict[str, Any]) -> bool:
        if operation != self.operation or not self.match(params):
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


def for_strategy(strategy_id: str) -> Callable[[dict[str, Any]], bool]:
    """Matches the TransactWriteItems that commits `strategy_id`."""

    def match(params: dict[str, Any]) -> bool:
        return any(
            item.get("Update", {}).get("Key", {}).get("strategy_id") == {"S": strategy_id}
            for item in params.get("TransactItems", [])
        )

    return match


class DynamoFaults:
    """botocore event handlers on the PynamoDB clients: injects faults, logs the requests that
    would reach DynamoDB, and emulates TransactWriteItems idempotency."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.tokens: dict[str, tuple[dict[str, Any], bytes]] = {}
        self.replays = 0
        self._after: Fault | None = None
        self._clients: list[Any] = []

    def add(
        self,
        operation: str,
        kind: str | None = None,
        *,
        answer: Answer | None = None,
        **kwargs: Any,
    ) -> Fault:
        fault = Fault(operation, answer=KINDS[kind] if kind else answer, **kwargs)
        self.faults.append(fault)
        return fault

    def clear(self) -> None:
        self.faults.clear()

    def calls(self, operation: str) -> int:
        return sum(1 for name, _ in self.log if name == operation)

    def attach(self) -> None:
        self._clients = [m._get_connection().connection.client for m in ALL_MODELS]
        for client in self._clients:
            events = client.meta.events
            events.register_first("before-call.dynamodb", self._before_call, unique_id="faults")
            events.register("after-call.dynamodb", self._after_call, unique_id="faults-after")

    def detach(self) -> None:
        for client in self._clients:
            client.meta.events.unregister("before-call.dynamodb", unique_id="faults")
            client.meta.events.unregister("after-call.dynamodb", unique_id="faults-after")

    def _before_call(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        operation = model.name
        body: dict[str, Any] = json.loads(params["body"] or b"{}")  # the serialized request
        self.log.append((operation, body))
        self._after = None
        for fault in self.faults:
            if fault.take(operation, body):
                if fault.after is not None:
                    self._after = fault
                    break
                assert fault.answer is not None
                return parsed(fault.answer(body), model)
        token = body.get("ClientRequestToken")
        if operation == "TransactWriteItems" and token in self.tokens:
            known, answer = self.tokens[token]
            if known == body:
                self.replays += 1
                return parsed(fake_response(200, answer, "application/x-amz-json-1.0"), model)
            return parsed(IDEMPOTENT_MISMATCH(body), model)
        return None  # on to moto

    def _after_call(self, http_response: Any, model: Any, **_: Any) -> None:
        if model.name == "TransactWriteItems" and http_response.status_code == 200:
            params = self.log[-1][1]
            if "ClientRequestToken" in params:
                self.tokens[params["ClientRequestToken"]] = (params, http_response.content)
        fault, self._after = self._after, None
        if fault is not None and fault.after is not None and http_response.status_code == 200:
            raise fault.after(model)


IDEMPOTENT_MISMATCH = dynamodb_error(
    400,
    DDB + "IdempotentParameterMismatchException",
    "One or more parameter values were invalid: the request uses the same client token as a "
    "previous, but non-identical request.",
)


# --- the world --------------------------------------------------------------------------


_scan_client: list[Any] = []  # one for all tests: creating boto3 clients is slow
_SEED: list[dict[str, Any]] = []  # the strategy items as StrategyRepository.put wrote them


def scan_all() -> dict[str, list[dict[str, Any]]]:
    """Every item of every table, raw, in a stable order (a client without the faults)."""
    (client,) = _scan_client
    return scan_tables(client)


WALL_CLOCK = ("updated_at", "committed_at")


def normalized(scan: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    """The scan without the wall-clock times of strategy items and of the event outbox's
    items and events (two runs never share them)."""
    strategies = StrategyModel.Meta.table_name
    outbox = OutboxModel.Meta.table_name
    return {
        table: sorted(
            (
                _without_commit_time(item)
                if table == outbox
                else {k: v for k, v in item.items() if table != strategies or k not in WALL_CLOCK}
                for item in items
            ),
            key=lambda i: json.dumps(i, sort_keys=True),
        )
        for table, items in scan.items()
    }


def _without_commit_time(item: dict[str, Any]) -> dict[str, Any]:
    events = [
        {k: v for k, v in event.items() if k != "time"} for event in json.loads(item["events"]["S"])
    ]
    kept = {k: v for k, v in item.items() if k not in ("committed_at", "expires_at", "events")}
    return {**kept, "events": events}


def by_strategy(scan: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[Any]]]:
    """The scan's items per strategy id, per table."""
    out: dict[str, dict[str, list[Any]]] = {sid: {} for sid in ALL_IDS}
    for table, items in scan.items():
        for item in items:
            out[item["strategy_id"]["S"]].setdefault(table, []).append(item)
    return out


Outcome = dict[str, Any]


def outcome_of(result: Any) -> Outcome:
    if isinstance(result, BulkFailure):
        return {"error": result.error.code}
    return {
        "result": result.model_dump(mode="json"),
        "version": result.state.version,
        "changed": not result.changes.empty,
    }


@dataclass
class World:
    faults: DynamoFaults
    market: Any = field(default_factory=Market)
    sleeps: list[float] = field(default_factory=list)
    now: int = STEP_NOW[0]
    repos: DynamoRepositories = field(init=False)
    service: ExecutionService = field(init=False)
    last_due: int = 0  # strategies the last scheduled tick found due

    def reset(self, *, fresh: bool = False) -> None:
        """Empty tables, fresh repositories, the strategies put again, no faults."""
        self.faults.clear()
        if not fresh:
            dynamodb.delete_tables()
        dynamodb.create_tables(wait=True)
        self.faults.tokens.clear()
        self.repos = dynamo_repositories(
            retry=RetryPolicy(attempts=ATTEMPTS, base_delay=BASE_DELAY, sleep=self._sleep)
        )
        self.service = ExecutionService(
            self.repos.strategies,
            self.repos.states,
            self.market,
            stale_policy="reject",
            clock=lambda: self.now,
        )
        if not _SEED:  # put through the repository once, then restored in one request
            for strategy in STRATEGIES:
                self.repos.strategies.put(strategy)
            _SEED.extend(scan_all()[StrategyModel.Meta.table_name])
        else:
            _scan_client[0].batch_write_item(
                RequestItems={
                    StrategyModel.Meta.table_name: [{"PutRequest": {"Item": i}} for i in _SEED]
                }
            )
        self.faults.log.clear()
        self.sleeps.clear()

    def _sleep(self, seconds: float) -> None:
        """Record the backoff instead of sleeping it; 2 ms pass all the same, as the clock
        moves between real attempts (commit timestamps are in milliseconds)."""
        self.sleeps.append(seconds)
        time.sleep(0.002)

    def single(self, step: int, sid: str) -> dict[str, Outcome]:
        self.now = STEP_NOW[step]
        try:
            return {sid: outcome_of(self.service.evaluate_by_id(sid))}
        except EngineError as exc:
            return {sid: {"error": exc.code, "status": exc.status}}

    def bulk(self, step: int, ids: Sequence[str] = ALL_IDS) -> dict[str, Outcome]:
        self.now = STEP_NOW[step]
        answer = self.service.evaluate_bulk(list(ids))
        return {r.strategy_id: outcome_of(r) for r in answer.results}

    def tick(self, step: int) -> dict[str, Outcome]:
        """The scheduled run at the step's bar close; outcomes from what it committed."""
        self.now = STEP_NOW[step]
        report = run_scheduled_tick(self.service, tick_ms=self.now, chunk_size=200, fanout=None)
        self.last_due = report.due
        return {f.strategy_id: {"error": f.error.code} for f in report.failures}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    use_fake_aws(monkeypatch)
    saved = [(model, model.Meta.host, model.Meta.region) for model in ALL_MODELS]
    faults = DynamoFaults()
    try:
        with mock_aws():
            if any((host, region) != (None, REGION) for _, host, region in saved):
                dynamodb.bind(host=None, region=REGION)
            # else the connections (and botocore clients, slow to create) of the previous
            # test serve again: moto routes any client while a mock is active
            if not _scan_client:
                _scan_client.append(boto3.client("dynamodb", region_name=REGION))
            faults.attach()
            created = World(faults)
            created.reset(fresh=True)
            yield created
    finally:
        faults.detach()
        for model, host, region in saved:
            model.Meta.host = host
            model.Meta.region = region
        if any((host, region) != (None, REGION) for _, host, region in saved):
            dynamodb.reset_connections()


# --- expected results: the same scenario without faults ---------------------------------

Scan = dict[str, list[dict[str, Any]]]
_BASELINES: dict[str, list[tuple[dict[str, Outcome], Scan]]] = {}

SINGLE_ID = "multi-1"  # BTC and ETH: stop-out with cooldown, take-profit, re-entry


def baseline(world: World, scenario: str) -> list[tuple[dict[str, Outcome], Scan]]:
    """Per step: the outcomes and the normalized tables of a fault-free run; leaves the
    world reset."""
    if scenario not in _BASELINES:
        steps = []
        for step in range(len(STEP_NOW)):
            outcomes = world.single(step, SINGLE_ID) if scenario == "single" else world.bulk(step)
            assert all("error" not in o for o in outcomes.values()), outcomes
            steps.append((outcomes, normalized(scan_all())))
        assert world.faults.replays == 0 and not world.sleeps
        _BASELINES[scenario] = steps
        world.reset()
    return _BASELINES[scenario]


def test_concurrent_commits_leave_exactly_what_sequential_ones_leave(world: World) -> None:
    """The deployed functions commit a bulk run's strategies concurrently (COMMIT_WORKERS);
    every step answers and leaves the tables as the one-at-a-time baseline does."""
    expected = baseline(world, "bulk")
    world.service.commit_workers = 8
    with moto_requests_atomic():
        for step, (outcomes, tables) in enumerate(expected):
            assert world.bulk(step) == outcomes
            assert normalized(scan_all()) == tables
        # the same bar again, concurrently too: nothing changes
        again = world.bulk(len(expected) - 1)
    assert all(not o["changed"] for o in again.values())
    assert normalized(scan_all()) == expected[-1][1]


def check_backoff(sleeps: list[float]) -> None:
    """Retry n of one call slept within [cap/2, cap], cap = base·2^n: exponential, jittered."""
    for n, slept in enumerate(sleeps):
        cap = BASE_DELAY * 2**n
        assert cap / 2 <= slept <= cap, (n, sleeps)


def check_concurrent_backoffs(sleeps: list[float], calls: int | None = None) -> None:
    """Backoffs of calls that may run concurrently (an evaluation's open positions and open
    orders are queried together), interleaved: each is retry n's of some call, in
    [cap/2, cap] with cap = base·2^n, and no call retries n+1 times before n times (with
    `calls`, exactly that many calls retried each time)."""
    per_retry: list[int] = []
    for slept in sleeps:
        n = next(
            (n for n in range(ATTEMPTS) if BASE_DELAY * 2**n / 2 <= slept < BASE_DELAY * 2**n),
            None,
        )
        assert n is not None, sleeps
        per_retry.extend([0] * (n + 1 - len(per_retry)))
        per_retry[n] += 1
    assert per_retry == sorted(per_retry, reverse=True), (per_retry, sleeps)
    if calls is not None:
        assert per_retry == [calls] * (ATTEMPTS - 1), (per_retry, sleeps)


def test_the_scenario_exercises_every_kind_of_write(world: World) -> None:
    expected = baseline(world, "bulk")
    entries, exits, again = (outcomes for outcomes, _ in expected)
    assert all(o["changed"] and o["version"] == 1 for o in entries.values())
    btc = exits["btc-1"]["result"]
    assert [t["exit_reason"] for t in btc["closed_trades"]] == ["stop_loss"]
    assert btc["cooldowns"][0]["active"] and btc["cooldowns"][0]["tier"] == "short"
    eth = exits["eth-1"]["result"]
    assert [t["exit_reason"] for t in eth["closed_trades"]] == ["take_profit"]
    assert not exits["sol-1"]["changed"] and exits["sol-1"]["version"] == 1
    assert again["btc-1"]["changed"] and again["btc-1"]["version"] == 3
    single = baseline(world, "single")
    assert [s[0][SINGLE_ID]["version"] for s in single] == [1, 2, 3]
    tables = single[-1][1]
    assert {m.__name__: len(tables[m.Meta.table_name]) for m in ALL_MODELS} == {
        "StrategyModel": 10,
        "PositionModel": 4,  # two trades, two open positions
        "OrderModel": 12,
        "CooldownModel": 1,
        "CandleModel": 0,
        "OutboxModel": 3,  # one per commit: the events of versions 1, 2 and 3
    }


# --- (1) DynamoDB throttling and transient errors ---------------------------------------

OPERATIONS = ("GetItem", "Query", "BatchGetItem", "TransactWriteItems")


def _transient_params() -> list[Any]:
    params: list[Any] = []
    for kind in KINDS:
        ops = ("TransactWriteItems",) if kind in TRANSACTION_ONLY else OPERATIONS
        params.append(pytest.param(kind, ops, id=kind))
    return params


@pytest.mark.parametrize(("kind", "operations"), _transient_params())
def test_transient_fault_is_retried_with_backoff_and_the_result_is_the_normal_one(
    world: World, kind: str, operations: tuple[str, ...]
) -> None:
    """At every step of an evaluation history (entry, stop-out and take-profit with a
    cooldown, re-entry), the first two calls of every DynamoDB operation fail."""
    expected = baseline(world, "single")
    hit: set[str] = set()
    for step, (outcomes, tables) in enumerate(expected):
        world.faults.clear()
        world.sleeps.clear()
        world.faults.log.clear()
        faults = {op: world.faults.add(op, kind, times=2) for op in operations}
        assert world.single(step, SINGLE_ID) == outcomes
        assert normalized(scan_all()) == tables
        assert world.faults.replays == 0
        called = [op for op in operations if world.faults.calls(op)]
        assert all(faults[op].hits == 2 for op in called)
        assert len(world.sleeps) == 2 * len(called)  # two backoffs per failing operation
        check_concurrent_backoffs(world.sleeps)
        hit.update(called)
    assert hit == set(operations)  # every operation was part of some step


PERSISTENT = [
    ("GetItem", "ProvisionedThroughputExceededException"),
    ("Query", "InternalServerError"),
    ("BatchGetItem", "ConnectTimeoutError"),
    ("TransactWriteItems", "ThrottlingException"),
    ("TransactWriteItems", "ServiceUnavailable"),
    ("TransactWriteItems", "TransactionCanceled(ThrottlingError)"),
]


@pytest.mark.parametrize(("operation", "kind"), PERSISTENT)
def test_persistent_fault_is_503_storage_unavailable_and_writes_nothing(
    world: World, operation: str, kind: str
) -> None:
    expected = baseline(world, "single")
    hit = 0
    for step, (outcomes, tables) in enumerate(expected):
        world.faults.clear()
        world.sleeps.clear()
        before = scan_all()
        fault = world.faults.add(operation, kind)
        got = world.single(step, SINGLE_ID)
        if fault.hits:
            hit += 1
            assert got == {SINGLE_ID: {"error": "storage_unavailable", "status": 503}}
            # the open positions and the open orders are queried together: both fail
            calls = 2 if operation == "Query" else 1
            assert fault.hits == calls * ATTEMPTS
            check_concurrent_backoffs(world.sleeps, calls)
            assert scan_all() == before  # not one attribute of one item changed
            world.faults.clear()
            got = world.single(step, SINGLE_ID)
        assert got == outcomes  # and the retry of the request recovers in full
        assert normalized(scan_all()) == tables
    assert hit


def test_evaluate_by_id_raises_storage_unavailable_naming_the_cause(world: World) -> None:
    world.faults.add("TransactWriteItems", "ThrottlingException")
    with pytest.raises(StorageUnavailable) as info:
        world.service.evaluate_by_id(SINGLE_ID)
    assert (info.value.status, info.value.code) == (503, "storage_unavailable")
    assert "TransactWriteItems" in info.value.message
    assert "ThrottlingException" in info.value.message


@pytest.mark.parametrize(
    ("step", "kind"),
    [
        (0, "ThrottlingException"),
        (1, "TransactionCanceled(ThrottlingError)"),
    ],
)
def test_bulk_persistent_commit_fault_fails_that_strategy_alone(
    world: World, step: int, kind: str
) -> None:
    expected = baseline(world, "bulk")
    for earlier in range(step):
        assert world.bulk(earlier) == expected[earlier][0]
    outcomes, tables = expected[step]
    victim = "eth-2"
    before = by_strategy(scan_all())
    world.faults.add("TransactWriteItems", kind, match=for_strategy(victim))
    got = world.bulk(step)
    assert got[victim] == {"error": "storage_unavailable"}
    assert {sid: o for sid, o in got.items() if sid != victim} == {
        sid: o for sid, o in outcomes.items() if sid != victim
    }
    scan = scan_all()
    now, normal, wanted = by_strategy(scan), by_strategy(normalized(scan)), by_strategy(tables)
    assert now[victim] == before[victim]  # the victim: untouched
    assert all(normal[sid] == wanted[sid] for sid in ALL_IDS if sid != victim)

    # the retry (SQS redelivery, the next tick) commits the victim and changes no other
    world.faults.clear()
    again = world.bulk(step)
    assert again[victim] == outcomes[victim]
    for sid in ALL_IDS:
        if sid != victim:
            assert again[sid]["version"] == outcomes[sid]["version"], sid
            assert not again[sid]["changed"], sid
    scan = scan_all()
    assert normalized(scan) == tables
    after = by_strategy(scan)
    assert all(after[sid] == now[sid] for sid in ALL_IDS if sid != victim)


@pytest.mark.parametrize(
    ("kind", "steps"),
    [("ProvisionedThroughputExceededException", 3), ("EndpointConnectionError", 1)],
)
def test_bulk_transient_faults_are_retried_and_the_results_are_the_normal_ones(
    world: World, kind: str, steps: int
) -> None:
    """Batched reads (strategies, cooldowns), the open-items index and per-strategy queries,
    and every commit: the first two calls of each fail, at every step."""
    expected = baseline(world, "bulk")
    for step, (outcomes, tables) in enumerate(expected[:steps]):
        world.faults.clear()
        world.sleeps.clear()
        faults = [world.faults.add(op, kind, times=2) for op in OPERATIONS if op != "GetItem"]
        assert world.bulk(step) == outcomes
        assert normalized(scan_all()) == tables
        assert [f.hits for f in faults] == [2, 2, 2]
        assert len(world.sleeps) == 6


@pytest.mark.parametrize(("operation", "step"), [("BatchGetItem", 0), ("Query", 1)])
def test_bulk_persistent_read_fault_fails_every_strategy_it_serves_and_writes_nothing(
    world: World, operation: str, step: int
) -> None:
    """A batched read serves many strategies, so its failure is theirs: each answers
    storage_unavailable (a bulk answer is never all-or-nothing), nothing is written, and the
    retry recovers."""
    expected = baseline(world, "bulk")
    for earlier in range(step):
        assert world.bulk(earlier) == expected[earlier][0]
    outcomes, tables = expected[step]
    before = scan_all()
    fault = world.faults.add(operation, "ThrottlingException")
    got = world.bulk(step)
    assert got == {sid: {"error": "storage_unavailable"} for sid in ALL_IDS}
    assert fault.hits >= ATTEMPTS
    assert scan_all() == before
    world.faults.clear()
    assert world.bulk(step) == outcomes
    assert normalized(scan_all()) == tables


def _strategy_batch_get_with(victim: str) -> Callable[[dict[str, Any]], bool]:
    """Matches a BatchGetItem of the strategies table whose keys include `victim`."""

    def match(params: dict[str, Any]) -> bool:
        keys = params.get("RequestItems", {}).get(StrategyModel.Meta.table_name, {})
        return {"strategy_id": {"S": victim}} in keys.get("Keys", [])

    return match


def _open_items_query(
    *, index: str, strategy_id: str | None = None
) -> Callable[[dict[str, Any]], bool]:
    def match(params: dict[str, Any]) -> bool:
        if not params.get("IndexName", "").startswith(index):
            return False
        values = params.get("ExpressionAttributeValues", {}).values()
        return strategy_id is None or {"S": strategy_id} in values

    return match


def assert_only_these_failed(
    got: dict[str, Outcome],
    normal: dict[str, Outcome],
    victims: Sequence[str],
    before: dict[str, Any],
) -> None:
    """The victims answer storage_unavailable and their items are untouched; every other
    strategy answers what it answers without faults."""
    assert {sid: got[sid] for sid in victims} == {
        sid: {"error": "storage_unavailable"} for sid in victims
    }
    assert {sid: o for sid, o in got.items() if sid not in victims} == {
        sid: o for sid, o in normal.items() if sid not in victims
    }
    after = by_strategy(scan_all())
    assert all(after[sid] == before[sid] for sid in victims)


@pytest.mark.parametrize("step", [0, 2])
def test_bulk_strategy_read_failing_for_one_slice_fails_only_that_slice(
    world: World, step: int
) -> None:
    """Strategies are read 100 at a time (4 here); a slice whose read keeps failing fails
    its own strategies, and every other strategy's result and commit stand."""
    expected = baseline(world, "bulk")
    for earlier in range(step):
        assert world.bulk(earlier) == expected[earlier][0]
    outcomes, _ = expected[step]
    world.service.read_slice = 4
    slice_of_victim = list(ALL_IDS[:4])  # btc-1, btc-2, btc-3, eth-1
    world.faults.add("BatchGetItem", "ThrottlingException", match=_strategy_batch_get_with("eth-1"))
    before = by_strategy(scan_all())
    assert_only_these_failed(world.bulk(step), outcomes, slice_of_victim, before)

    world.faults.clear()  # the retry (SQS redelivery, the next tick) completes the slice
    again = world.bulk(step)
    assert {sid: again[sid] for sid in slice_of_victim} == {
        sid: outcomes[sid] for sid in slice_of_victim
    }


def test_bulk_state_load_failing_falls_back_to_slices_and_fails_only_the_unreadable_one(
    world: World,
) -> None:
    """The bulk state load reads the sharded open-item indexes for everyone at once. When
    that keeps failing, states are loaded slice by slice (through the per-strategy local
    indexes); only the slice whose read still fails is reported failed."""
    step = 1  # open positions and resting orders exist: the state matters
    expected = baseline(world, "bulk")
    assert world.bulk(0) == expected[0][0]
    outcomes, _ = expected[step]
    world.service.read_slice = 4
    victim_slice = list(ALL_IDS[4:8])  # eth-2, multi-1, multi-2, multi-3
    world.faults.add("Query", "ThrottlingException", match=_open_items_query(index="open-"))
    world.faults.add(
        "Query",
        "ThrottlingException",
        match=_open_items_query(index="strategy-open-", strategy_id="multi-2"),
    )
    before = by_strategy(scan_all())
    assert_only_these_failed(world.bulk(step), outcomes, victim_slice, before)


# --- (2) market data failures -----------------------------------------------------------


def _raise(error: BaseException) -> Callable[[Candles], Candles]:
    def fault(candles: Candles) -> Candles:
        raise error

    return fault


MARKET_FAULTS: dict[str, tuple[Callable[[Candles], Candles], str]] = {
    "timeout": (_raise(TimeoutError("read timed out")), "market_data_unavailable"),
    "connection reset": (_raise(ConnectionResetError(104, "reset")), "market_data_unavailable"),
    "unavailable": (_raise(MarketDataUnavailable("exchange down")), "market_data_unavailable"),
    "no bars": (lambda candles: Candles.empty(), "market_data_unavailable"),
    # the newest closed bar closed 3 bars ago: beyond the 2 allowed
    "stale": (lambda candles: candles.head(len(candles) - 4), "market_data_stale"),
}


@pytest.mark.parametrize(
    ("fault", "step"),
    [
        ("timeout", 0),
        ("connection reset", 1),
        ("unavailable", 0),
        ("no bars", 0),
        ("stale", 0),
        ("stale", 1),
    ],
)
def test_market_data_fault_fails_only_the_strategies_that_need_the_pair(
    world: World, fault: str, step: int
) -> None:
    expected = baseline(world, "bulk")
    for earlier in range(step):
        assert world.bulk(earlier) == expected[earlier][0]
    outcomes, tables = expected[step]
    broken, code = MARKET_FAULTS[fault]
    before = by_strategy(scan_all())
    world.market.faults[("ETH/USDT", "1h")] = broken
    world.now = STEP_NOW[step]
    answer = world.service.evaluate_bulk(list(ALL_IDS))
    got = {r.strategy_id: outcome_of(r) for r in answer.results}
    assert {sid for sid, o in got.items() if "error" in o} == NEEDS_ETH
    assert all(got[sid] == {"error": code} for sid in NEEDS_ETH)
    assert all(got[sid] == outcomes[sid] for sid in ALL_IDS if sid not in NEEDS_ETH)
    assert (answer.summary.failed, answer.summary.market_data_fetches) == (len(NEEDS_ETH), 3)
    scan = scan_all()
    now, normal, wanted = by_strategy(scan), by_strategy(normalized(scan)), by_strategy(tables)
    for sid in ALL_IDS:
        if sid in NEEDS_ETH:
            assert now[sid] == before[sid], sid  # multi-1 not even for its BTC half
        else:
            assert normal[sid] == wanted[sid], sid

    # a single evaluation answers the 503 itself; then the data is back and all catch up
    with pytest.raises(EngineError) as info:
        world.service.evaluate_by_id("multi-2")
    assert (info.value.status, info.value.code) == (503, code)
    assert by_strategy(scan_all())["multi-2"] == before["multi-2"]
    world.market.faults.clear()
    again = world.bulk(step)
    assert all(again[sid] == outcomes[sid] for sid in NEEDS_ETH)
    assert normalized(scan_all()) == tables


class FakeExchange:
    """Shaped like a ccxt exchange (fetch_ohlcv, timeframes, rateLimit) over CANDLES: bars
    opened at or after `since`, at most `limit`. `failures[symbol]` are raised one per call
    first; `down[symbol]` on every call."""

    id = "fake"
    rateLimit = 0  # ccxt's name
    timeframes = {"1h": "1h"}

    def __init__(self) -> None:
        self.failures: dict[str, list[Exception]] = {}
        self.down: dict[str, Exception] = {}
        self.calls: list[str] = []

    def fetch_ohlcv(
        self, symbol: str, timeframe: str, since: int | None = None, limit: int | None = None
    ) -> list[list[float]]:
        self.calls.append(symbol)
        if symbol in self.down:
            raise self.down[symbol]
        if self.failures.get(symbol):
            raise self.failures[symbol].pop(0)
        c = CANDLES[(symbol, timeframe)]
        rows = [
            [float(c.time[i]), c.open[i], c.high[i], c.low[i], c.close[i], c.volume[i]]
            for i in range(len(c))
            if since is None or c.time[i] >= since
        ]
        return rows[:limit]


@pytest.mark.parametrize("persistent", [False, True])
def test_ccxt_timeouts_are_retried_and_a_persistent_one_fails_only_its_pair(
    world: World, persistent: bool
) -> None:
    """The real CcxtProvider over a fake exchange: a timeout that clears within its retries
    changes nothing; one that persists fails the strategies needing ETH, and only those."""
    import ccxt  # a runtime dependency: a broken import must fail, not skip
    from engine.adapters.marketdata import CcxtProvider

    outcomes, tables = baseline(world, "bulk")[0]
    exchange = FakeExchange()
    pauses: list[float] = []
    world.service.market_data = CcxtProvider(
        "fake", exchange=exchange, max_retries=3, backoff_s=0.5, sleep=pauses.append
    )
    before = by_strategy(scan_all())
    if not persistent:
        exchange.failures["ETH/USDT"] = [
            ccxt.RequestTimeout("timed out"),
            ccxt.NetworkError("reset"),
        ]
        assert world.bulk(0) == outcomes
        assert normalized(scan_all()) == tables
        assert exchange.calls.count("ETH/USDT") == 3 and pauses == [0.5, 1.0]
        return
    exchange.down["ETH/USDT"] = ccxt.RequestTimeout("fake GET /klines timed out")
    got = world.bulk(0)
    assert exchange.calls.count("ETH/USDT") == 4  # 1 + max_retries
    assert all(got[sid] == {"error": "market_data_unavailable"} for sid in NEEDS_ETH)
    assert all(got[sid] == outcomes[sid] for sid in ALL_IDS if sid not in NEEDS_ETH)
    after = by_strategy(scan_all())
    assert all(after[sid] == before[sid] for sid in NEEDS_ETH)
    exchange.down.clear()
    again = world.bulk(0)
    assert all(again[sid] == outcomes[sid] for sid in NEEDS_ETH)
    assert normalized(scan_all()) == tables


# --- (3) a Lambda timeout in the middle of a bulk run ------------------------------------


def timed_out(*_: Any) -> LambdaTimeout:
    return LambdaTimeout("Task timed out after 900.00 seconds")


def die(params: dict[str, Any]) -> AWSResponse:
    raise timed_out()


VICTIM = "eth-2"  # the fifth strategy in request and schedule order; commits at every step
BEFORE_VICTIM = ALL_IDS[: ALL_IDS.index(VICTIM)]


@pytest.mark.parametrize(
    ("death", "runner", "step"),
    [
        ("evaluating", "bulk", 1),
        ("evaluating", "tick", 0),
        ("before the commit", "bulk", 0),
        ("before the commit", "tick", 0),
        ("after the commit", "bulk", 0),
        ("after the commit", "tick", 1),
    ],
)
def test_lambda_timeout_mid_bulk_leaves_no_partial_state_and_a_rerun_completes(
    world: World, monkeypatch: pytest.MonkeyPatch, death: str, runner: str, step: int
) -> None:
    """The process dies at the fifth strategy: while evaluating it, when its transaction is
    about to be sent, or once its transaction was applied. A rerun of the same bulk request
    (or of the same scheduled tick) evaluates the rest and changes nothing of what is done."""
    expected = baseline(world, "bulk")
    for earlier in range(step):
        assert world.bulk(earlier) == expected[earlier][0]
    outcomes, tables = expected[step]
    run = world.bulk if runner == "bulk" else world.tick
    before = by_strategy(scan_all())

    real = service_module.evaluate

    def evaluate_or_die(strategy: Any, state: Any, market: Any, now: int) -> Any:
        if state.strategy_id == VICTIM:
            raise timed_out()
        return real(strategy, state, market, now)

    if death == "evaluating":
        monkeypatch.setattr(service_module, "evaluate", evaluate_or_die)
    elif death == "before the commit":
        world.faults.add("TransactWriteItems", match=for_strategy(VICTIM), answer=die)
    else:
        world.faults.add("TransactWriteItems", match=for_strategy(VICTIM), after=timed_out)
    with pytest.raises(LambdaTimeout):
        run(step)
    monkeypatch.setattr(service_module, "evaluate", real)
    world.faults.clear()

    # a run evaluates every strategy before it commits any: dying while evaluating leaves
    # nothing committed; dying at a commit leaves the earlier commits (sent one at a time)
    if death == "evaluating":
        done: set[str] = set()
    else:
        done = set(BEFORE_VICTIM) | ({VICTIM} if death == "after the commit" else set())
    scan = scan_all()
    now, normal, wanted = by_strategy(scan), by_strategy(normalized(scan)), by_strategy(tables)
    for sid in ALL_IDS:
        if sid in done:
            assert normal[sid] == wanted[sid], sid  # committed in full
        else:
            assert now[sid] == before[sid], sid  # not one attribute written

    again = run(step)
    if runner == "bulk":
        for sid in ALL_IDS:
            if sid in done:  # no new version, no new order
                assert again[sid]["version"] == outcomes[sid]["version"], sid
                assert not again[sid]["changed"], sid
            else:
                assert again[sid] == outcomes[sid], sid
    else:
        assert again == {}  # no strategy failed
        # the rerun evaluates only the strategies whose bar was not recorded
        assert world.last_due == len(ALL_IDS) - len(done)
    scan = scan_all()
    assert normalized(scan) == tables
    after = by_strategy(scan)
    assert all(after[sid] == now[sid] for sid in done)  # not even a timestamp moved


# --- (4) a crash inside commit after the transaction was sent ---------------------------


def _killed(model: Any) -> BaseException:
    return LambdaTimeout("killed once the transaction returned")


def _bug(model: Any) -> BaseException:
    return RuntimeError("a bug once the transaction returned")


@pytest.mark.parametrize("crash", ["process killed", "exception in the service"])
@pytest.mark.parametrize("step", [0, 1])
def test_crash_after_the_transaction_was_applied_then_retry_creates_no_duplicates(
    world: World, crash: str, step: int
) -> None:
    expected = baseline(world, "single")
    for earlier in range(step):
        assert world.single(earlier, SINGLE_ID) == expected[earlier][0]
    outcomes, tables = expected[step]
    world.faults.log.clear()
    world.faults.add(
        "TransactWriteItems", after=_killed if crash == "process killed" else _bug, times=1
    )
    if crash == "process killed":
        with pytest.raises(LambdaTimeout):
            world.single(step, SINGLE_ID)
    else:
        assert world.single(step, SINGLE_ID) == {
            SINGLE_ID: {"error": "internal_error", "status": 500}
        }
    assert normalized(scan_all()) == tables  # the transaction went through, whole
    committed = scan_all()

    retry = world.single(step, SINGLE_ID)[SINGLE_ID]
    assert retry["version"] == outcomes[SINGLE_ID]["version"] and not retry["changed"]
    assert retry["result"]["positions"] == outcomes[SINGLE_ID]["result"]["positions"]
    assert scan_all() == committed  # no duplicate, not even a new timestamp
    assert world.faults.calls("TransactWriteItems") == 1


def _lost_internal_error(model: Any) -> BaseException:
    """DynamoDB applied the transaction but answered 500 (its outcome unknown to the caller)."""
    _, answer = parsed(KINDS["InternalServerError"]({}), model)
    return ClientError(answer, model.name)


LOST: dict[str, Callable[[Any], BaseException]] = {
    "InternalServerError": _lost_internal_error,
    "ReadTimeoutError": lambda model: ReadTimeoutError(endpoint_url=URL),
    "ConnectionClosedError": lambda model: ConnectionClosedError(endpoint_url=URL),
}


@pytest.mark.parametrize("lost", sorted(LOST))
def test_lost_commit_response_then_reevaluation_converges_without_duplicates(
    world: World, lost: str
) -> None:
    """Whatever the first answer, the committed transaction is neither doubled nor lost."""
    expected = baseline(world, "single")
    assert world.single(0, SINGLE_ID) == expected[0][0]
    outcomes, tables = expected[1]
    world.faults.add("TransactWriteItems", after=LOST[lost], times=1)
    world.single(1, SINGLE_ID)  # answered by the idempotent retry of the same transaction
    assert normalized(scan_all()) == tables
    committed = scan_all()
    retry = world.single(1, SINGLE_ID)[SINGLE_ID]
    assert retry["version"] == outcomes[SINGLE_ID]["version"] and not retry["changed"]
    assert scan_all() == committed


@pytest.mark.parametrize("lost", ["InternalServerError", "ReadTimeoutError"])
def test_lost_commit_response_is_answered_by_the_idempotent_retry(world: World, lost: str) -> None:
    """The response of the committing TransactWriteItems is lost; RetryPolicy resends it with
    the same ClientRequestToken, which DynamoDB answers from its idempotency window."""
    outcomes, tables = baseline(world, "single")[0]
    world.faults.add("TransactWriteItems", after=LOST[lost], times=1)
    assert world.single(0, SINGLE_ID) == outcomes
    assert normalized(scan_all()) == tables
    assert world.faults.replays == 1


def test_a_commit_resends_its_token_after_a_fault_and_takes_a_fresh_one_after_a_cancellation(
    world: World,
) -> None:
    """One ClientRequestToken per logical commit: a resend after a fault whose outcome is
    unknown (a 500) carries the same token and the very same parameters, so DynamoDB could
    answer it from its idempotency window; a definite cancellation takes a fresh token, or
    the next attempt would be refused as a mismatch or answered with the cancelled outcome."""
    outcomes, tables = baseline(world, "single")[0]
    world.faults.add("TransactWriteItems", "InternalServerError", times=1)
    world.faults.add("TransactWriteItems", "TransactionCanceled(TransactionConflict)", times=1)
    assert world.single(0, SINGLE_ID) == outcomes
    assert normalized(scan_all()) == tables
    first, resent, fresh = [body for op, body in world.faults.log if op == "TransactWriteItems"]
    assert len(first["ClientRequestToken"]) == 32  # a uuid4, hex
    assert resent == first
    assert fresh["ClientRequestToken"] != first["ClientRequestToken"]
    assert {**fresh, "ClientRequestToken": first["ClientRequestToken"]} == first
    assert world.faults.replays == 0
