"""The DynamoDB storage adapter against moto's in-process mock.

Table names are read when engine.adapters.dynamodb.models is imported, and another test module may have
imported it first with other settings. The fixture therefore never relies on import-time
configuration: it points the models at the mock (no endpoint, a fixed region), creates
whatever tables the models name, and restores the models afterwards. Tests can run in any
order and under pytest-xdist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
from engine.adapters import dynamodb
from engine.adapters.dynamodb import (
    ALL_MODELS,
    DynamoCandleRepository,
    DynamoRepositories,
    DynamoStateRepository,
    DynamoStrategyRepository,
    TableMissing,
    TransactionTooLarge,
    dynamo_repositories,
    table_definitions,
)
from engine.adapters.dynamodb import models as storage_models
from engine.adapters.dynamodb.models import (
    OrderModel,
    OutboxModel,
    PositionModel,
    StrategyModel,
    all_open_shards,
    now_ms,
    open_shard,
)
from engine.adapters.marketdata import RepositoryProvider
from engine.core.candles import Candles
from engine.core.state import (
    Changes,
    CooldownState,
    ExecutionState,
    Position,
)
from engine.core.strategy import StrategyInvalid, parse_strategy
from engine.service.errors import ConcurrentEvaluation, StorageUnavailable, StrategyNotFound
from engine.service.execution import ExecutionService
from engine.service.ports import EvaluatedBar

from tests.support.aws import scan_tables
from tests.support.fakes import MemoryMarket
from tests.support.storage import (
    closed,
    entry_changes,
    make_strategy,
    open_position,
    orders_of,
    stop_out_changes,
)

REGION = "us-east-1"
T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


LOCAL_OPEN_INDEXES = {"strategy-open-positions-index", "strategy-open-orders-index"}


class Requests:
    """Counts DynamoDB API calls with a botocore 'before-call' handler on every client the
    models use (the state repository's transactions go through StrategyModel's connection).
    `fail` makes chosen calls fail the way DynamoDB would, before anything is sent."""

    def __init__(self) -> None:
        self.log: list[tuple[str, dict[str, Any]]] = []
        self.fail: Callable[[str, dict[str, Any]], dict[str, Any] | None] = lambda op, p: None
        self._clients: list[Any] = []

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        body = json.loads(params["body"] or b"{}")  # the serialized request
        self.log.append((model.name, body))
        error = self.fail(model.name, body)
        if error is not None:
            return _HttpStatus(400), error
        return None

    def attach(self) -> None:
        self._clients = [m._get_connection().connection.client for m in ALL_MODELS]
        for client in self._clients:
            client.meta.events.register("before-call.dynamodb", self, unique_id="count")

    def detach(self) -> None:
        for client in self._clients:
            client.meta.events.unregister("before-call.dynamodb", unique_id="count")

    def reset(self) -> None:
        self.log.clear()

    @property
    def operations(self) -> list[str]:
        return [name for name, _ in self.log]

    def count(self, operation: str | None = None) -> int:
        return sum(1 for name in self.operations if operation is None or name == operation)


class _HttpStatus:
    def __init__(self, status_code: int) -> None:
        self.status_code = status_code
        self.headers: dict[str, str] = {}


@pytest.fixture
def calls(aws: None) -> Iterator[Requests]:
    counter = Requests()
    counter.attach()
    yield counter
    counter.detach()


def throttled(operation: str) -> dict[str, Any]:
    return {
        "Error": {"Code": "ProvisionedThroughputExceededException", "Message": "slow down"},
        "ResponseMetadata": {"HTTPStatusCode": 400},
    }


def scan_all() -> dict[str, list[dict[str, Any]]]:
    """Every item of every table, raw, in a stable order (independent of PynamoDB)."""
    return scan_tables(boto3.client("dynamodb", region_name=REGION))


def index_keys(index_name: str, model: Any) -> list[tuple[str, str]]:
    """(strategy_id, id) of the items the sparse index holds."""
    client = boto3.client("dynamodb", region_name=REGION)
    range_name = "position_id" if model is PositionModel else "order_id"
    found = []
    for shard in all_open_shards():
        page = client.query(
            TableName=model.Meta.table_name,
            IndexName=index_name,
            KeyConditionExpression="open_shard = :s",
            ExpressionAttributeValues={":s": {"S": shard}},
        )
        found += [(i["strategy_id"]["S"], i[range_name]["S"]) for i in page["Items"]]
    return sorted(found)


# --- tables -----------------------------------------------------------------------------


def test_created_tables_match_the_plain_definitions(aws: None) -> None:
    client = boto3.client("dynamodb", region_name=REGION)
    definitions = table_definitions()
    assert set(definitions) == {m.__name__ for m in ALL_MODELS}
    for model in ALL_MODELS:
        expected = definitions[model.__name__]
        table = client.describe_table(TableName=model.Meta.table_name)["Table"]
        assert table["BillingModeSummary"]["BillingMode"] == expected["BillingMode"]
        assert table["KeySchema"] == expected["KeySchema"]
        assert (
            sorted(table["AttributeDefinitions"], key=lambda a: a["AttributeName"])
            == expected["AttributeDefinitions"]
        )
        indexes = sorted(table.get("GlobalSecondaryIndexes", []), key=lambda i: i["IndexName"])
        assert [
            {
                "IndexName": i["IndexName"],
                "KeySchema": i["KeySchema"],
                "Projection": i["Projection"],
            }
            for i in indexes
        ] == expected["GlobalSecondaryIndexes"]


def test_exact_schema() -> None:
    d = table_definitions()
    s, p, o, c, k = (
        d["StrategyModel"],
        d["PositionModel"],
        d["OrderModel"],
        d["CooldownModel"],
        d["CandleModel"],
    )
    assert (s["TableNameEnv"], s["DefaultTableName"]) == (
        "STRATEGIES_TABLE",
        "execution-strategies",
    )
    assert s["KeySchema"] == [{"AttributeName": "strategy_id", "KeyType": "HASH"}]
    assert s["GlobalSecondaryIndexes"] == [
        {
            "IndexName": "due-index",
            "KeySchema": [
                {"AttributeName": "status", "KeyType": "HASH"},
                {"AttributeName": "next_due_ms", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
        {
            "IndexName": "status-timeframe-index",
            "KeySchema": [
                {"AttributeName": "status", "KeyType": "HASH"},
                {"AttributeName": "timeframe", "KeyType": "RANGE"},
            ],
            "Projection": {"ProjectionType": "ALL"},
        },
    ]
    for table, rng, index in (
        (p, "position_id", "open-positions-index"),
        (o, "order_id", "open-orders-index"),
    ):
        assert table["KeySchema"] == [
            {"AttributeName": "strategy_id", "KeyType": "HASH"},
            {"AttributeName": rng, "KeyType": "RANGE"},
        ]
        assert table["GlobalSecondaryIndexes"][0]["IndexName"] == index
        assert table["GlobalSecondaryIndexes"][0]["KeySchema"] == [
            {"AttributeName": "open_shard", "KeyType": "HASH"},
            {"AttributeName": "strategy_id", "KeyType": "RANGE"},
        ]
    assert c["KeySchema"][1] == {"AttributeName": "asset", "KeyType": "RANGE"}
    assert k["AttributeDefinitions"] == [
        {"AttributeName": "market", "AttributeType": "S"},
        {"AttributeName": "open_time", "AttributeType": "N"},
    ]
    assert all(t["BillingMode"] == "PAY_PER_REQUEST" for t in d.values())


def test_create_tables_is_idempotent(aws: None) -> None:
    assert dynamodb.create_tables() == []


def test_importing_reads_no_configuration_and_configure_applies_the_settings() -> None:
    env = {
        **os.environ,
        "STRATEGIES_TABLE": "s-t",
        "POSITIONS_TABLE": "p-t",
        "ORDERS_TABLE": "o-t",
        "COOLDOWNS_TABLE": "c-t",
        "CANDLES_TABLE": "k-t",
        "OUTBOX_TABLE": "x-t",
        "DYNAMODB_ENDPOINT": "http://127.0.0.1:8000",
        "AWS_REGION": "eu-west-1",
    }
    show = "print(json.dumps([[m.Meta.table_name, m.Meta.host, m.Meta.region] for m in M]))"
    code = f"import json; from engine.adapters.dynamodb.models import ALL_MODELS as M; {show}"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    # the environment says otherwise, but importing reads nothing: AWS defaults
    assert json.loads(out.stdout)[0] == ["execution-strategies", None, "us-east-1"]
    configured = (
        "import json; from engine.adapters.dynamodb import configure; "
        "from engine.adapters.dynamodb.models import ALL_MODELS as M; "
        f"from engine.settings import Settings; configure(Settings.from_env()); {show}"
    )
    out = subprocess.run(
        [sys.executable, "-c", configured], env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout) == [
        [name, "http://127.0.0.1:8000", "eu-west-1"]
        for name in ("s-t", "p-t", "o-t", "c-t", "k-t", "x-t")
    ]


def test_open_shard_is_stable_and_spread() -> None:
    assert open_shard("rsi-meanrev-btc") == open_shard("rsi-meanrev-btc")
    shards = {open_shard(f"s{n}") for n in range(100)}
    assert shards == set(all_open_shards()) == {"open#0", "open#1", "open#2", "open#3"}


# --- strategies -------------------------------------------------------------------------


def test_strategy_round_trip(repos: DynamoRepositories) -> None:
    strategy = make_strategy("rsi-meanrev-btc")
    repos.strategies.put(strategy)
    assert repos.strategies.get("rsi-meanrev-btc") == strategy
    assert repos.strategies.get("unknown") is None
    assert repos.strategies.get("") is None
    item = StrategyModel.get("rsi-meanrev-btc")
    assert item.definition == strategy.canonical_json()
    assert (item.status, item.timeframe, item.state_version) == ("active", "1h", 0)


def test_put_updates_the_definition_but_never_the_state(repos: DynamoRepositories) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    state = repos.states.load([strategy])["s1"]
    version = repos.states.commit(state, stop_out_changes(open_position("s1")))
    assert version == 1

    paused = make_strategy("s1", status="paused", timeframe="4h", name="renamed")
    repos.strategies.put(paused)
    assert repos.strategies.get("s1") == paused
    item = StrategyModel.get("s1")
    assert (item.status, item.timeframe, item.state_version) == ("paused", "4h", 1)
    assert item.cooldown_assets == {"BTC/USDT"}


def test_list_by_status_timeframe_and_all(repos: DynamoRepositories) -> None:
    for sid, status, tf in [
        ("a", "active", "1h"),
        ("b", "active", "4h"),
        ("c", "paused", "1h"),
        ("d", "active", "1h"),
    ]:
        repos.strategies.put(make_strategy(sid, status=status, timeframe=tf))
    ids = lambda strategies: [s.strategy_id for s in strategies]  # noqa: E731
    assert ids(repos.strategies.list()) == ["a", "b", "c", "d"]
    assert ids(repos.strategies.list(status="active")) == ["a", "b", "d"]
    assert ids(repos.strategies.list(status="active", timeframe="1h")) == ["a", "d"]
    assert ids(repos.strategies.list(status="paused")) == ["c"]
    assert ids(repos.strategies.list(timeframe="4h")) == ["b"]


def test_list_by_status_queries_the_index(repos: DynamoRepositories, calls: Requests) -> None:
    repos.strategies.put(make_strategy("a"))
    calls.reset()
    repos.strategies.list(status="active")
    assert calls.operations == ["Query"]
    assert calls.log[0][1]["IndexName"] == "status-timeframe-index"


def test_a_minute_tick_reads_only_the_due_strategies(
    repos: DynamoRepositories, calls: Requests
) -> None:
    """The schedule runs every minute: it must not read every hourly and daily strategy to
    find the few due ones. One query of the due index, which holds each active strategy
    under the close of the bar after the one it was last evaluated at."""
    hour, day = 3_600_000, 86_400_000
    midnight = int(T0.timestamp() * 1000)
    evaluated = []
    for n in range(6):
        repos.strategies.put(make_strategy(f"hourly-{n}", timeframe="1h"))
        evaluated.append((f"hourly-{n}", midnight + 9 * hour, midnight + 11 * hour))
    for n in range(3):
        repos.strategies.put(make_strategy(f"daily-{n}", timeframe="1d"))
        evaluated.append((f"daily-{n}", midnight - day, midnight + day))
    repos.strategies.put(make_strategy("minute-0", timeframe="1m"))  # never evaluated
    repos.strategies.put(make_strategy("minute-paused", timeframe="1m", status="paused"))
    failed = repos.states.record_bars(
        [(ExecutionState(strategy_id=s), EvaluatedBar(b, d)) for s, b, d in evaluated]
    )
    assert failed == {}
    service = ExecutionService(repos.strategies, repos.states, market_data=None)  # type: ignore[arg-type]
    read: list[int] = []

    def count_read(model: Any, parsed: dict[str, Any], **_: Any) -> None:
        read.append(parsed["ScannedCount"])

    client = StrategyModel._get_connection().connection.client
    client.meta.events.register("after-call.dynamodb.Query", count_read, unique_id="read")
    try:
        calls.reset()
        due = service.due_strategies(midnight + 10 * hour + 7 * 60_000)  # 10:07
        assert [s.strategy_id for s in due] == ["minute-0"]
        assert calls.operations == ["Query"] and read == [1]
        assert calls.log[0][1]["IndexName"] == "due-index"

        calls.reset()
        read.clear()
        due = service.due_strategies(midnight + 11 * hour)  # the 10:00 bar closed
        assert [s.strategy_id for s in due] == [*(f"hourly-{n}" for n in range(6)), "minute-0"]
        assert calls.operations == ["Query"] and read == [7]

        calls.reset()
        read.clear()
        due = service.due_strategies(midnight + day)  # and the day's bar
        assert len(due) == 10 and calls.operations == ["Query"] and read == [10]
    finally:
        client.meta.events.unregister("after-call.dynamodb.Query", unique_id="read")


def test_a_quiet_evaluation_records_its_bar_only_forward_and_only_on_the_version_it_read(
    repos: DynamoRepositories,
) -> None:
    repos.strategies.put(make_strategy("s"))
    hour = 3_600_000

    def stored() -> tuple[int | None, int | None]:
        item = StrategyModel.get("s", consistent_read=True)
        return item.last_bar_ms, item.next_due_ms

    assert stored() == (None, 0)  # new: due at once
    v0 = ExecutionState(strategy_id="s")
    assert repos.states.record_bars([(v0, EvaluatedBar(10 * hour, 12 * hour))]) == {}
    assert stored() == (10 * hour, 12 * hour)
    # an older bar (a late evaluation) does not move it back; the same bar changes nothing
    assert repos.states.record_bars([(v0, EvaluatedBar(9 * hour, 11 * hour))]) == {}
    assert repos.states.record_bars([(v0, EvaluatedBar(10 * hour, 12 * hour))]) == {}
    assert stored() == (10 * hour, 12 * hour)
    # a state another evaluation moved on (version 1 now) was not evaluated at 11:00
    StrategyModel("s").update(actions=[StrategyModel.state_version.set(1)])
    assert repos.states.record_bars([(v0, EvaluatedBar(11 * hour, 13 * hour))]) == {}
    assert stored() == (10 * hour, 12 * hour)
    # in one batch with others, the lost one is dropped and the rest are written
    repos.strategies.put(make_strategy("t"))
    batch = [
        (v0, EvaluatedBar(12 * hour, 14 * hour)),
        (ExecutionState(strategy_id="t"), EvaluatedBar(12 * hour, 14 * hour)),
        (ExecutionState(strategy_id="ghost"), EvaluatedBar(12 * hour, 14 * hour)),
    ]
    assert repos.states.record_bars(batch) == {}
    assert stored() == (10 * hour, 12 * hour)
    assert StrategyModel.get("t").last_bar_ms == 12 * hour
    with pytest.raises(StrategyModel.DoesNotExist):  # a bar never creates a strategy item
        StrategyModel.get("ghost", consistent_read=True)


def test_a_changed_status_or_timeframe_makes_a_strategy_due_afresh(
    repos: DynamoRepositories,
) -> None:
    hour = 3_600_000
    repos.strategies.put(make_strategy("s"))
    evaluated = (ExecutionState(strategy_id="s"), EvaluatedBar(10 * hour, 12 * hour))
    assert repos.states.record_bars([evaluated]) == {}
    repos.strategies.put(make_strategy("s"))  # an edit that keeps both: still evaluated
    item = StrategyModel.get("s", consistent_read=True)
    assert (item.last_bar_ms, item.next_due_ms) == (10 * hour, 12 * hour)
    repos.strategies.put(make_strategy("s", timeframe="4h"))
    item = StrategyModel.get("s", consistent_read=True)
    assert (item.last_bar_ms, item.next_due_ms) == (None, 0)
    assert repos.states.record_bars([evaluated]) == {}
    repos.strategies.put(make_strategy("s", timeframe="4h", status="paused"))
    assert [s.strategy_id for s in repos.strategies.due(10**15)] == []
    repos.strategies.put(make_strategy("s", timeframe="4h"))  # active again: bars while
    item = StrategyModel.get("s", consistent_read=True)  # paused were not missed
    assert (item.last_bar_ms, item.next_due_ms) == (None, 0)
    assert [s.strategy_id for s in repos.strategies.due(0)] == ["s"]


def test_strategies_stored_before_the_due_index_are_backfilled_once(
    repos: DynamoRepositories,
) -> None:
    repos.strategies.put(make_strategy("new"))
    for sid in ("old-1", "old-2"):  # items as the previous release wrote them
        StrategyModel(
            sid,
            definition=make_strategy(sid).canonical_json(),
            status="active",
            timeframe="1h",
            state_version=3,
        ).save()
    assert [s.strategy_id for s in repos.strategies.due(10**13)] == ["new"]
    assert repos.strategies.backfill_schedule() == 2
    assert [s.strategy_id for s in repos.strategies.due(10**13)] == ["new", "old-1", "old-2"]
    assert StrategyModel.get("old-1").state_version == 3
    assert repos.strategies.backfill_schedule() == 0


def test_delete(repos: DynamoRepositories) -> None:
    repos.strategies.put(make_strategy("gone"))
    assert repos.strategies.delete("gone") is True
    assert repos.strategies.get("gone") is None
    assert repos.strategies.delete("gone") is False


def test_get_many_batches_250_ids(repos: DynamoRepositories, calls: Requests) -> None:
    for n in range(200):
        repos.strategies.put(make_strategy(f"s{n:03d}"))
    wanted = [f"s{n:03d}" for n in range(250)]  # 50 of them do not exist
    calls.reset()
    found = repos.strategies.get_many([*wanted, "s000", "s001"])  # duplicates are read once
    assert sorted(found) == wanted[:200]
    assert all(found[sid].strategy_id == sid for sid in found)
    assert calls.operations == ["BatchGetItem"] * 3
    assert [
        len(p["RequestItems"][StrategyModel.Meta.table_name]["Keys"]) for _, p in calls.log
    ] == [
        100,
        100,
        50,
    ]


def test_get_many_retries_unprocessed_keys(
    repos: DynamoRepositories, monkeypatch: pytest.MonkeyPatch, sleeps: list[float]
) -> None:
    for n in range(30):
        repos.strategies.put(make_strategy(f"s{n:02d}"))
    connection = StrategyModel._get_connection()
    real = connection.batch_get_item
    calls: list[int] = []

    def partial(keys: list[Any], **kwargs: Any) -> dict[str, Any]:
        calls.append(len(keys))
        if len(calls) == 1:  # DynamoDB answers part of the first request only
            data = real(keys[:10], **kwargs)
            data["UnprocessedKeys"] = {StrategyModel.Meta.table_name: {"Keys": list(keys[10:])}}
            return data
        return real(keys, **kwargs)

    monkeypatch.setattr(connection, "batch_get_item", partial)
    found = repos.strategies.get_many([f"s{n:02d}" for n in range(30)])
    assert len(found) == 30
    assert calls == [30, 20]
    assert len(sleeps) == 1  # backed off once before resending


def test_unprocessed_keys_forever_raise_storage_unavailable(
    repos: DynamoRepositories, monkeypatch: pytest.MonkeyPatch
) -> None:
    repos.strategies.put(make_strategy("s1"))
    connection = StrategyModel._get_connection()

    def nothing(keys: list[Any], **kwargs: Any) -> dict[str, Any]:
        return {
            "Responses": {},
            "UnprocessedKeys": {StrategyModel.Meta.table_name: {"Keys": list(keys)}},
        }

    monkeypatch.setattr(connection, "batch_get_item", nothing)
    with pytest.raises(StorageUnavailable, match="unprocessed"):
        repos.strategies.get_many(["s1"])


# --- state: load and commit -------------------------------------------------------------


def test_new_strategy_has_an_empty_state(repos: DynamoRepositories) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    assert repos.states.load([strategy]) == {"s1": ExecutionState(strategy_id="s1", version=0)}
    assert repos.states.load([]) == {}


def test_state_round_trip(repos: DynamoRepositories) -> None:
    strategy = make_strategy("s1", assets=("BTC/USDT", "ETH/USDT"))
    repos.strategies.put(strategy)
    state = repos.states.load([strategy])["s1"]

    btc, eth = open_position("s1", 0), open_position("s1", 1, asset="ETH/USDT")
    changes = Changes(positions=[btc, eth], orders=orders_of(btc) + orders_of(eth))
    assert repos.states.commit(state, changes) == 1

    loaded = repos.states.load([strategy])["s1"]
    assert loaded.version == 1
    assert loaded.positions == [btc, eth]
    # the filled entry orders are not part of the state; the resting ones are
    resting = [o for o in changes.orders if o.status == "open"]
    assert sorted(loaded.orders, key=lambda o: o.order_id) == sorted(
        resting, key=lambda o: o.order_id
    )
    assert loaded.cooldowns == {}

    # BTC stops out: the position closes, a cooldown item appears
    stop = stop_out_changes(btc)
    assert repos.states.commit(loaded, stop) == 2
    after = repos.states.load([strategy])["s1"]
    assert after.version == 2
    assert after.positions == [eth]
    assert sorted(o.order_id for o in after.orders) == sorted(
        o.order_id for o in orders_of(eth) if o.status == "open"
    )
    assert after.cooldowns == {"BTC/USDT": stop.cooldowns[0]}

    # the closed position is kept (it is a trade) with every field
    trade = PositionModel.get("s1", btc.position_id)
    assert trade.status == "closed" and trade.open_shard is None
    assert trade.exit_reason == "stop_loss" and trade.pnl == stop.positions[0].pnl


def test_closed_positions_and_orders_leave_the_open_indexes(repos: DynamoRepositories) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    position = open_position("s1")
    state = repos.states.load([strategy])["s1"]
    repos.states.commit(state, entry_changes(position))
    assert index_keys("open-positions-index", PositionModel) == [("s1", position.position_id)]
    assert index_keys("open-orders-index", OrderModel) == [
        ("s1", f"{position.position_id}-sl"),
        ("s1", f"{position.position_id}-tp"),
    ]
    item = PositionModel.get("s1", position.position_id)
    assert item.open_shard == open_shard("s1")

    state = repos.states.load([strategy])["s1"]
    repos.states.commit(state, stop_out_changes(position))
    assert index_keys("open-positions-index", PositionModel) == []
    assert index_keys("open-orders-index", OrderModel) == []


def test_two_commits_from_the_same_version_exactly_one_wins(repos: DynamoRepositories) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    first = repos.states.load([strategy])["s1"]
    second = repos.states.load([strategy])["s1"]
    assert first.version == second.version == 0

    assert repos.states.commit(first, entry_changes(open_position("s1", 0))) == 1
    after_first = scan_all()

    competing = Changes(
        positions=[open_position("s1", 5, asset="ETH/USDT")],
        orders=orders_of(open_position("s1", 5, asset="ETH/USDT")),
        cooldowns=[CooldownState(asset="ETH/USDT")],
    )
    with pytest.raises(ConcurrentEvaluation) as info:
        repos.states.commit(second, competing)
    assert info.value.status == 409
    assert "state version 0" in info.value.message and "holds 1" in info.value.message
    assert scan_all() == after_first  # nothing of the losing commit was written


def test_commit_without_a_strategy_item_is_not_found(repos: DynamoRepositories) -> None:
    state = ExecutionState(strategy_id="nobody")
    with pytest.raises(StrategyNotFound):
        repos.states.commit(state, entry_changes(open_position("nobody")))
    assert all(not items for items in scan_all().values())


def test_empty_changes_write_nothing(repos: DynamoRepositories, calls: Requests) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    state = repos.states.load([strategy])["s1"]
    before = scan_all()
    calls.reset()
    assert repos.states.commit(state, Changes()) == 0
    assert calls.log == []
    assert scan_all() == before


def test_committing_the_same_changes_twice_creates_no_duplicates(
    repos: DynamoRepositories,
) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    changes = entry_changes(open_position("s1"))
    state = repos.states.load([strategy])["s1"]
    assert repos.states.commit(state, changes) == 1
    once = scan_all()

    # a retried evaluation writes the very same items (ids come from the engine)
    state = repos.states.load([strategy])["s1"]
    assert repos.states.commit(state, changes) == 2
    twice = scan_all()
    for model in (PositionModel, OrderModel):
        assert twice[model.Meta.table_name] == once[model.Meta.table_name]
    assert len(twice[OrderModel.Meta.table_name]) == 3
    assert repos.states.load([strategy])["s1"].version == 2


def test_duplicate_items_within_one_changes_are_written_once(repos: DynamoRepositories) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    position = open_position("s1")
    state = repos.states.load([strategy])["s1"]
    repos.states.commit(state, Changes(positions=[position, closed(position)]))
    assert PositionModel.get("s1", position.position_id).status == "closed"


def test_commit_of_more_than_100_items_is_refused_whole(
    repos: DynamoRepositories, calls: Requests
) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    state = repos.states.load([strategy])["s1"]
    positions = [open_position("s1", n) for n in range(34)]
    changes = Changes(positions=positions, orders=[o for p in positions for o in orders_of(p)])
    before = scan_all()
    calls.reset()
    with pytest.raises(TransactionTooLarge, match="138 items"):
        repos.states.commit(state, changes)
    assert calls.log == []
    assert scan_all() == before

    # 98 changed items plus the strategy item and the event outbox is exactly the limit
    fits = Changes(
        positions=positions[:24],
        orders=[o for p in positions[:24] for o in orders_of(p)],
        cooldowns=[CooldownState(asset=a) for a in ("A", "B")],
    )
    calls.reset()
    assert repos.states.commit(state, fits) == 1
    (transaction,) = [body for name, body in calls.log if name == "TransactWriteItems"]
    assert len(transaction["TransactItems"]) == 100


def test_commit_is_one_transaction(repos: DynamoRepositories, calls: Requests) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    state = repos.states.load([strategy])["s1"]
    calls.reset()
    repos.states.commit(state, stop_out_changes(open_position("s1")))
    assert calls.operations == ["TransactWriteItems"]
    items = calls.log[0][1]["TransactItems"]
    # strategy update, position, 2 orders, cooldown, and the outbox item of their events
    assert len(items) == 1 + 1 + 2 + 1 + 1
    assert sum("Update" in i for i in items) == 1 and sum("Put" in i for i in items) == 5


def test_throttled_commit_is_retried_with_backoff(
    repos: DynamoRepositories, calls: Requests, sleeps: list[float]
) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    state = repos.states.load([strategy])["s1"]
    failures = iter([True, True])
    calls.fail = lambda op, p: (
        throttled(op) if op == "TransactWriteItems" and next(failures, False) else None
    )
    calls.reset()
    assert repos.states.commit(state, entry_changes(open_position("s1"))) == 1
    assert calls.operations == ["TransactWriteItems"] * 3
    assert len(sleeps) == 2 and sleeps[1] > sleeps[0] / 2  # exponential, with jitter
    assert repos.states.load([strategy])["s1"].version == 1


def test_transaction_conflicts_are_retried(repos: DynamoRepositories, calls: Requests) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    state = repos.states.load([strategy])["s1"]
    failures = iter([True])

    def conflict(op: str, params: dict[str, Any]) -> dict[str, Any] | None:
        if op != "TransactWriteItems" or not next(failures, False):
            return None
        return {
            "Error": {"Code": "TransactionCanceledException", "Message": "conflict"},
            "CancellationReasons": [{"Code": "TransactionConflict"}]
            + [{"Code": "None"}] * (len(params["TransactItems"]) - 1),
        }

    calls.fail = conflict
    calls.reset()
    assert repos.states.commit(state, entry_changes(open_position("s1"))) == 1
    tokens = [p["ClientRequestToken"] for _, p in calls.log]
    assert len(tokens) == 2 and tokens[0] != tokens[1]  # a cancelled attempt is not resumed


def test_persistent_throttling_raises_storage_unavailable_and_writes_nothing(
    repos: DynamoRepositories, calls: Requests, sleeps: list[float]
) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    state = repos.states.load([strategy])["s1"]
    before = scan_all()
    calls.fail = lambda op, p: throttled(op) if op == "TransactWriteItems" else None
    calls.reset()
    with pytest.raises(StorageUnavailable) as info:
        repos.states.commit(state, entry_changes(open_position("s1")))
    assert info.value.status == 503
    assert calls.operations == ["TransactWriteItems"] * 4  # RetryPolicy(attempts=4)
    assert len(sleeps) == 3
    calls.fail = lambda op, p: None
    assert scan_all() == before


def test_throttled_reads_are_retried_too(repos: DynamoRepositories, calls: Requests) -> None:
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    failures = iter([True])
    calls.fail = lambda op, p: throttled(op) if op == "GetItem" and next(failures, False) else None
    assert repos.strategies.get("s1") == strategy
    calls.fail = lambda op, p: throttled(op) if op == "Query" else None
    with pytest.raises(StorageUnavailable):
        repos.states.load([strategy])


def test_errors_retrying_cannot_fix_are_storage_errors(repos: DynamoRepositories) -> None:
    StrategyModel.delete_table()
    # a missing table is a deployment problem: 503 with its own code, not retried
    with pytest.raises(TableMissing, match="ResourceNotFoundException") as info:
        repos.strategies.get("s1")
    assert info.value.status == 503 and info.value.code == "storage_table_missing"


# --- state: bulk loads ------------------------------------------------------------------


def _seed_open_states(repos: DynamoRepositories, ids: list[str]) -> dict[str, Position]:
    """Each strategy gets an open position and a closed trade; returns the open ones."""
    opened: dict[str, Position] = {}
    for sid in ids:
        strategy = make_strategy(sid)
        repos.strategies.put(strategy)
        state = repos.states.load([strategy])[sid]
        old = open_position(sid, 0)
        version = repos.states.commit(state, entry_changes(old))
        state = ExecutionState(strategy_id=sid, version=version)
        repos.states.commit(state, stop_out_changes(old))
        state = repos.states.load([strategy])[sid]
        opened[sid] = open_position(sid, 7)
        repos.states.commit(state, entry_changes(opened[sid]))
    return opened


def test_bulk_load_reads_the_open_indexes_and_keeps_only_requested_strategies(
    repos: DynamoRepositories, calls: Requests
) -> None:
    ids = [f"s{n:02d}" for n in range(24)]
    opened = _seed_open_states(repos, ids)
    requested = ids[3:15]  # 12 > threshold 8; others in the same id range have open items too
    strategies = [make_strategy(sid) for sid in requested]
    # an hour after those commits: the indexes have long caught up
    later = DynamoStateRepository(retry=repos.states.retry, clock=lambda: now_ms() + 3_600_000)

    calls.reset()
    states = later.load(strategies)
    queries = [p for op, p in calls.log if op == "Query"]
    assert queries and all("IndexName" in p for p in queries)
    assert {p["IndexName"] for p in queries} == {"open-positions-index", "open-orders-index"}
    assert len(queries) <= 2 * len(all_open_shards())

    assert sorted(states) == sorted(requested)
    for sid in requested:
        state = states[sid]
        assert state.version == 3
        assert state.positions == [opened[sid]]
        assert sorted(o.order_id for o in state.orders) == [
            f"{opened[sid].position_id}-sl",
            f"{opened[sid].position_id}-tp",
        ]
        assert set(state.cooldowns) == {"BTC/USDT"}

    # the same answer as the per-strategy path
    per_strategy = DynamoStateRepository(bulk_threshold=1_000, retry=repos.states.retry)
    calls.reset()
    assert per_strategy.load(strategies) == states
    assert {p.get("IndexName") for op, p in calls.log if op == "Query"} == LOCAL_OPEN_INDEXES
    assert all(p["ConsistentRead"] for op, p in calls.log if op == "Query")
    assert calls.count("Query") == 2 * len(requested)


def test_bulk_load_reads_recent_commits_through_the_consistent_local_indexes(
    repos: DynamoRepositories, calls: Requests, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The open indexes are eventually consistent: a strategy committed seconds ago may still
    show its previous open items there. Simulate an index that has not caught up at all."""
    ids = [f"s{n:02d}" for n in range(12)]
    opened = _seed_open_states(repos, ids)
    for index in (PositionModel.open_positions_index, OrderModel.open_orders_index):
        monkeypatch.setattr(index, "query", lambda *args, **kwargs: iter(()))
    strategies = [make_strategy(sid) for sid in ids]

    calls.reset()
    states = repos.states.load(strategies)  # committed just now
    assert all(states[sid].positions == [opened[sid]] for sid in ids)
    assert all(len(states[sid].orders) == 2 for sid in ids)
    assert calls.count("Query") == 2 * len(ids)  # consistent queries; the index ones are patched

    later = DynamoStateRepository(retry=repos.states.retry, clock=lambda: now_ms() + 3_600_000)
    stale = later.load(strategies)  # what the lagging index alone would have said
    assert all(stale[sid].positions == [] for sid in ids)


def test_quiet_bulk_load_of_1000_strategies_costs_few_requests(
    repos: DynamoRepositories, calls: Requests
) -> None:
    ids = [f"quiet-{n:04d}" for n in range(1000)]
    for sid in ids:
        repos.strategies.put(make_strategy(sid))
    busy = _seed_open_states(repos, ["busy-1", "busy-2"])  # not requested

    # the bulk path: definitions with get_many, then their states
    calls.reset()
    strategies = repos.strategies.get_many(ids)
    states = repos.states.load(list(strategies.values()))
    bulk = calls.operations
    assert len(states) == 1000
    assert all(
        s.version == 0 and not (s.positions or s.orders or s.cooldowns) for s in states.values()
    )
    assert bulk.count("BatchGetItem") == 10  # the strategy items, read once for both
    assert bulk.count("Query") == 8  # open positions and orders, 4 shards each
    assert len(bulk) == 18 <= 25

    # states of strategies that did not come from this repository: the items are read again
    calls.reset()
    fresh = [make_strategy(sid) for sid in ids]
    assert repos.states.load(fresh) == states
    assert len(calls.log) == 18 <= 25
    assert "busy-1" in busy


def test_single_evaluation_reads(repos: DynamoRepositories, calls: Requests) -> None:
    _seed_open_states(repos, ["s1"])
    calls.reset()
    strategy = repos.strategies.get("s1")
    assert strategy is not None
    state = repos.states.load([strategy])["s1"]
    # GetItem, a Query on positions and one on orders, a BatchGet of the one cooldown item
    assert calls.operations == ["GetItem", "Query", "Query", "BatchGetItem"]
    queries = [p for op, p in calls.log if op == "Query"]
    assert {p["IndexName"] for p in queries} == LOCAL_OPEN_INDEXES
    assert all(p["ConsistentRead"] for p in queries)
    assert state.version == 3 and len(state.positions) == 1 and set(state.cooldowns) == {"BTC/USDT"}


def test_a_load_at_the_same_head_reuses_the_open_items_it_read(
    repos: DynamoRepositories, calls: Requests
) -> None:
    """A warm container evaluating a strategy again at a head that did not move (a bar that
    changed nothing) reads the strategy item only; once the head moves, the items again."""
    opened = _seed_open_states(repos, ["s1"])
    strategy = repos.strategies.get("s1")
    assert strategy is not None
    first = repos.states.load([strategy])["s1"]
    assert [p.position_id for p in first.positions] == [opened["s1"].position_id]

    calls.reset()
    strategy = repos.strategies.get("s1")
    assert strategy is not None
    again = repos.states.load([strategy])["s1"]
    assert calls.operations == ["GetItem", "BatchGetItem"]  # no Query on positions or orders
    assert again == first
    again.positions.clear()  # what a load answers is the caller's own
    again.orders[0].price = 1.0
    assert repos.states.load([strategy])["s1"] == first

    # another container commits (the position is stopped out): the head moves, read again
    other = DynamoStateRepository(retry=repos.states.retry)
    other.commit(other.load([strategy])["s1"], stop_out_changes(opened["s1"]))
    calls.reset()
    strategy = repos.strategies.get("s1")
    assert strategy is not None
    after = repos.states.load([strategy])["s1"]
    assert calls.operations.count("Query") == 2
    assert after.version == first.version + 1
    assert after.positions == [] and after.orders == []


def test_a_long_trade_history_is_not_read_to_find_the_open_items(
    repos: DynamoRepositories,
) -> None:
    """One evaluation reads what is open, not every trade the strategy ever made."""
    strategy = make_strategy("s1")
    repos.strategies.put(strategy)
    for n in range(30):  # 30 closed trades: 30 positions and 90 orders of history
        state = repos.states.load([strategy])["s1"]
        position = open_position("s1", n)
        version = repos.states.commit(state, entry_changes(position))
        repos.states.commit(
            ExecutionState(strategy_id="s1", version=version), stop_out_changes(position)
        )
    current = open_position("s1", 99)
    repos.states.commit(repos.states.load([strategy])["s1"], entry_changes(current))

    read: list[tuple[str, int]] = []  # (table, items DynamoDB read to answer) per Query

    def count_read(model: Any, parsed: dict[str, Any], **_: Any) -> None:
        if model.name == "Query":
            read.append(
                (
                    parsed["Items"][0]["strategy_id"]["S"] if parsed["Items"] else "",
                    parsed["ScannedCount"],
                )
            )

    clients = {
        id(m._get_connection().connection.client): m._get_connection().connection.client
        for m in (PositionModel, OrderModel)
    }
    for client in clients.values():
        client.meta.events.register("after-call.dynamodb.Query", count_read, unique_id="read")
    try:
        state = repos.states.load([strategy])["s1"]
    finally:
        for client in clients.values():
            client.meta.events.unregister("after-call.dynamodb.Query", unique_id="read")

    assert state.positions == [current]
    assert sorted(o.order_id for o in state.orders) == [
        f"{current.position_id}-sl",
        f"{current.position_id}-tp",
    ]
    # the open position and its two resting orders (the two queries are sent together, so
    # either may answer first): nothing of the 120 history items
    assert sorted(scanned for _, scanned in read) == [1, 2]
    assert PositionModel.count("s1") == 31 and OrderModel.count("s1") == 93


def test_repositories_wired_together_share_what_they_read(aws: None, calls: Requests) -> None:
    wired = dynamo_repositories()
    wired.strategies.put(make_strategy("s1"))
    calls.reset()
    strategy = wired.strategies.get("s1")
    assert strategy is not None
    wired.states.load([strategy])
    assert calls.operations == ["GetItem", "Query", "Query"]
    wired.states.load([strategy])  # a snapshot serves one load only
    assert calls.operations[3:] == ["BatchGetItem", "Query", "Query"]
    # built alone, a state repository shares nothing: no side channel between instances
    calls.reset()
    strategy = DynamoStrategyRepository().get("s1")
    assert strategy is not None
    DynamoStateRepository().load([strategy])
    assert calls.operations == ["GetItem", "BatchGetItem", "Query", "Query"]


def test_a_version_read_before_a_concurrent_commit_cannot_overwrite_it(
    repos: DynamoRepositories,
) -> None:
    repos.strategies.put(make_strategy("s1"))
    stale = repos.strategies.get_many(["s1"])["s1"]  # version 0 noted with the definition

    # meanwhile another evaluation commits
    other = repos.states.load([make_strategy("s1")])["s1"]
    repos.states.commit(other, entry_changes(open_position("s1")))

    state = repos.states.load([stale])["s1"]  # positions of version 1, version 0
    assert state.version == 0 and len(state.positions) == 1
    with pytest.raises(ConcurrentEvaluation):
        repos.states.commit(state, stop_out_changes(open_position("s1")))


# --- candles ----------------------------------------------------------------------------


def _candles(start_ms: int, n: int, step_ms: int = 3_600_000, base: float = 100.0) -> Candles:
    rows = [
        (
            start_ms + i * step_ms,
            base + i,
            base + i + 2.5,
            base + i - 1.25,
            base + i + 0.5,
            10.0 * i,
        )
        for i in range(n)
    ]
    return Candles.from_rows(rows)


def assert_candles_equal(a: Candles, b: Candles) -> None:
    assert len(a) == len(b)
    for name in ("time", "open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


H_MS = 3_600_000
PERIOD_H_MS = 500 * H_MS  # a 1h item holds the 500 hours from a multiple of this


def test_candles_round_trip(repos: DynamoRepositories, calls: Requests) -> None:
    start = 1_704_067_200_000  # 2024-01-01, 352 hours into a 500-hour period
    assert (start % PERIOD_H_MS) // H_MS == 352
    candles = _candles(start, 200)  # 148 bars in one period, 52 in the next
    calls.reset()
    assert repos.candles.put("BTC/USDT", "1h", candles) == 200
    assert calls.operations == ["BatchGetItem", "PutItem", "PutItem"]

    calls.reset()
    latest = repos.candles.latest("BTC/USDT", "1h", 10)
    assert calls.operations == ["Query"]
    assert calls.log[0][1]["ScanIndexForward"] is False
    assert_candles_equal(latest, candles.tail(10))
    assert latest.time.dtype == np.int64
    assert latest.close.dtype == np.float64

    calls.reset()
    assert_candles_equal(repos.candles.latest("BTC/USDT", "1h", 100), candles.tail(100))
    assert calls.operations == ["Query"]  # spans both items, one request
    assert_candles_equal(repos.candles.latest("BTC/USDT", "1h", 500), candles)
    assert len(repos.candles.latest("BTC/USDT", "4h", 10)) == 0
    assert len(repos.candles.latest("ETH/USDT", "1h", 10)) == 0
    assert len(repos.candles.latest("BTC/USDT", "1h", 0)) == 0

    window = repos.candles.range("BTC/USDT", "1h", start + 5 * H_MS, start + 9 * H_MS)
    assert window.time.tolist() == [start + i * H_MS for i in range(5, 10)]
    across = repos.candles.range("BTC/USDT", "1h", start + 150 * H_MS, start + 160 * H_MS)
    assert across.time.tolist() == [start + i * H_MS for i in range(150, 161)]
    assert len(repos.candles.range("BTC/USDT", "1h", start + 1, start + 2)) == 0


def test_candles_are_packed_500_bars_per_item(repos: DynamoRepositories) -> None:
    """1,200 hours from a period's start: items of 500, 500 and 200 bars, keyed by the
    period's start under the packed partition, each far below DynamoDB's 400 KB."""
    start = 3_000 * PERIOD_H_MS
    repos.candles.put("BTC/USDT", "1h", _candles(start, 1_200))
    items = boto3.client("dynamodb", region_name=REGION).query(
        TableName=storage_models.CandleModel.Meta.table_name,
        KeyConditionExpression="market = :m",
        ExpressionAttributeValues={":m": {"S": "BTC/USDT#1h#p500"}},
    )["Items"]
    assert [(int(i["open_time"]["N"]), int(i["bars"]["N"])) for i in items] == [
        (start, 500),
        (start + PERIOD_H_MS, 500),
        (start + 2 * PERIOD_H_MS, 200),
    ]
    assert [len(i["data"]["B"]) for i in items] == [24_000, 24_000, 9_600]  # 48 bytes a bar
    # the first bar's open time, then its open, as little-endian int64 / float64
    data = items[0]["data"]["B"]
    assert int.from_bytes(data[:8], "little") == start
    assert np.frombuffer(data[500 * 8 : 500 * 8 + 8], "<f8")[0] == 100.0


def test_a_1100_bar_fetch_is_one_request(repos: DynamoRepositories, calls: Requests) -> None:
    start = 1_704_067_200_000
    candles = _candles(start, 3_000)
    repos.candles.put("BTC/USDT", "1h", candles)
    calls.reset()
    assert_candles_equal(repos.candles.latest("BTC/USDT", "1h", 1_100), candles.tail(1_100))
    assert calls.operations == ["Query"]
    assert calls.log[0][1]["Limit"] == 4  # 1,100 bars span at most four 500-bar items
    # as of a past time, cut inside an item
    as_of = start + 2_000 * H_MS + 60_000  # the bar opening at 1,999 h has closed
    calls.reset()
    found = repos.candles.latest("BTC/USDT", "1h", 1_100, closed_by_ms=as_of)
    assert_candles_equal(found, candles.head(2_000).tail(1_100))
    assert calls.operations == ["Query"]


def test_candles_closed_by_a_time_are_read_by_key_condition(
    repos: DynamoRepositories, calls: Requests
) -> None:
    """An evaluation as of a past time (or with the forming bar stored) gets the newest
    candles closed by then, however many later ones the table holds."""
    start = 1_704_067_200_000
    candles = _candles(start, 480)  # 148 bars in one period, then 332 in the next
    repos.candles.put("BTC/USDT", "1h", candles)
    as_of = start + 30 * H_MS + 60_000  # 30:01: the 29:00 bar closed at 30:00
    calls.reset()
    found = repos.candles.latest("BTC/USDT", "1h", 12, closed_by_ms=as_of)
    assert_candles_equal(found, candles.head(30).tail(12))
    assert calls.operations == ["Query"]
    assert "KeyConditionExpression" in calls.log[0][1] and "FilterExpression" not in calls.log[0][1]
    # the later period is never read: the key condition stops at the period of the cut
    assert calls.log[0][1]["ExpressionAttributeValues"] == {
        ":0": {"S": "BTC/USDT#1h#p500"},
        ":1": {"N": str(start - 352 * H_MS)},
    }
    # the provider over the table answers the same
    provider = RepositoryProvider(repos.candles)
    assert_candles_equal(provider.fetch("BTC/USDT", "1h", 12, as_of), found)
    # a cut in the second period: bars of both, none after the cut
    as_of = start + 200 * H_MS  # the bar opening at 199 h closes just then
    found = repos.candles.latest("BTC/USDT", "1h", 100, closed_by_ms=as_of)
    assert_candles_equal(found, candles.head(200).tail(100))
    found = repos.candles.latest("BTC/USDT", "1h", 100, closed_by_ms=as_of - 1)
    assert_candles_equal(found, candles.head(199).tail(100))


def test_candles_put_upserts_by_open_time(repos: DynamoRepositories) -> None:
    start = 1_704_067_200_000
    repos.candles.put("BTC/USDT", "1h", _candles(start, 5))
    repos.candles.put("BTC/USDT", "1h", _candles(start + 3 * H_MS, 4, base=200.0))
    stored = repos.candles.latest("BTC/USDT", "1h", 100)
    assert len(stored) == 7
    assert stored.open.tolist() == [100.0, 101.0, 102.0, 200.0, 201.0, 202.0, 203.0]


def test_candles_put_upserts_across_period_boundaries(repos: DynamoRepositories) -> None:
    """Bars 144..151 of the import straddle the boundary at 148; a second import over
    146..153 replaces two bars on one side and four on the other, adds two, and keeps the
    rest."""
    start = 1_704_067_200_000
    repos.candles.put("BTC/USDT", "1h", _candles(start + 144 * H_MS, 8, base=144.0))
    repos.candles.put("BTC/USDT", "1h", _candles(start + 146 * H_MS, 8, base=500.0))
    stored = repos.candles.latest("BTC/USDT", "1h", 100)
    assert stored.time.tolist() == [start + i * H_MS for i in range(144, 154)]
    assert stored.open.tolist() == [144.0, 145.0, *(500.0 + i for i in range(8))]
    # older bars in an earlier period: merged in without touching the later ones
    repos.candles.put("BTC/USDT", "1h", _candles(start, 2, base=1.0))
    assert repos.candles.latest("BTC/USDT", "1h", 100).open.tolist() == [
        1.0,
        2.0,
        144.0,
        145.0,
        *(500.0 + i for i in range(8)),
    ]


def test_a_put_that_read_a_stale_item_merges_again(repos: DynamoRepositories) -> None:
    """Two imports into one period: the one that read the item before the other wrote it
    fails its condition, reads again and merges, so neither loses its bars."""
    from engine.adapters.dynamodb.models import CandleModel

    start = 1_704_067_200_000
    repos.candles.put("BTC/USDT", "1h", _candles(start, 2))
    stale = CandleModel.get("BTC/USDT#1h#p500", start - 352 * H_MS)
    repos.candles.put("BTC/USDT", "1h", _candles(start + 2 * H_MS, 2, base=102.0))
    repos.candles._merge_into(
        "BTC/USDT#1h#p500", int(stale.open_time), _candles(start + 4 * H_MS, 1, base=104.0), stale
    )
    stored = repos.candles.latest("BTC/USDT", "1h", 10)
    assert stored.open.tolist() == [100.0, 101.0, 102.0, 103.0, 104.0]
    assert CandleModel.get("BTC/USDT#1h#p500", start - 352 * H_MS).revision == 2


def test_candles_with_non_finite_values_are_refused(repos: DynamoRepositories) -> None:
    bad = Candles.from_rows([(0, 1.0, 2.0, 0.5, float("nan"), 1.0)])
    with pytest.raises(ValueError, match="close"):
        repos.candles.put("BTC/USDT", "1h", bad)


def test_candle_repository_alone(aws: None) -> None:
    repo = DynamoCandleRepository()
    assert repo.put("EUR-USD", "1d", _candles(0, 3, step_ms=86_400_000)) == 3
    assert len(repo.latest("EUR-USD", "1d", 2)) == 2


def test_weekly_candle_items_start_on_a_monday(repos: DynamoRepositories) -> None:
    from engine.adapters.dynamodb.candles import period_start

    monday = 4 * 86_400_000  # 1970-01-05
    week = 7 * 86_400_000
    assert period_start(monday + 499 * week, "1w") == monday
    assert period_start(monday + 500 * week, "1w") == monday + 500 * week
    assert period_start(monday - week, "1w") == monday - 500 * week
    candles = _candles(monday + 498 * week, 4, step_ms=week)
    repos.candles.put("BTC/USDT", "1w", candles)
    assert_candles_equal(repos.candles.latest("BTC/USDT", "1w", 10), candles)


def _put_rows(candles: Candles, market: str) -> None:
    """Rows the way the engine stored candles before packing: one item per bar."""
    client = boto3.client("dynamodb", region_name=REGION)
    table = storage_models.CandleModel.Meta.table_name
    for i in range(len(candles)):
        item = {"market": {"S": market}, "open_time": {"N": str(int(candles.time[i]))}}
        for name in ("open", "high", "low", "close", "volume"):
            item[name] = {"N": repr(float(candles.field(name)[i]))}
        client.put_item(TableName=table, Item=item)


def test_rows_stored_one_per_bar_are_packed_by_the_migration(
    repos: DynamoRepositories, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    start = 1_704_067_200_000
    btc, eth = _candles(start, 700), _candles(0, 3, step_ms=86_400_000, base=1.5)
    _put_rows(btc, "BTC/USDT#1h")
    _put_rows(eth, "ETH/USDT#1d")
    # bars packed already (an import after the deploy) are kept; the rows fill in the rest
    newer = _candles(start + 700 * H_MS, 5, base=900.0)
    repos.candles.put("BTC/USDT", "1h", newer)
    assert len(repos.candles.latest("ETH/USDT", "1d", 10)) == 0  # rows are not read

    assert repos.candles.migrate_rows() == {"BTC/USDT#1h": 700, "ETH/USDT#1d": 3}
    assert_candles_equal(repos.candles.latest("BTC/USDT", "1h", 1_000).head(700), btc)
    assert repos.candles.latest("BTC/USDT", "1h", 1_000).open.tolist()[700:] == [
        900.0 + i for i in range(5)
    ]
    assert_candles_equal(repos.candles.latest("ETH/USDT", "1d", 10), eth)
    assert repos.candles.migrate_rows() == {"BTC/USDT#1h": 700, "ETH/USDT#1d": 3}  # again

    script_path = Path(__file__).resolve().parents[2] / "scripts" / "pack_candles.py"
    spec = importlib.util.spec_from_file_location("pack_candles", script_path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.main(["--delete"]) == 0
    assert "703 rows in 2 markets" in capsys.readouterr().out
    assert repos.candles.migrate_rows() == {}  # the rows are gone
    items = boto3.client("dynamodb", region_name=REGION).scan(
        TableName=storage_models.CandleModel.Meta.table_name
    )["Items"]
    # 700 rows from 352 h into a period: 148 + 500 + 52, and the 5 packed bars after them
    assert sorted((i["market"]["S"], int(i["bars"]["N"])) for i in items) == [
        ("BTC/USDT#1h#p500", 57),
        ("BTC/USDT#1h#p500", 148),
        ("BTC/USDT#1h#p500", 500),
        ("ETH/USDT#1d#p500", 3),
    ]
    assert_candles_equal(repos.candles.latest("ETH/USDT", "1d", 10), eth)
    assert len(repos.candles.latest("BTC/USDT", "1h", 1_000)) == 705


# --- every accepted strategy can commit (one trading truth) -------------------------------


def wide_strategy(assets: int) -> dict[str, Any]:
    """Stop and target, no signal, time or cooldown: at worst each asset closes its position
    (position, stop filled, target cancelled) and enters again (position, market order,
    stop, target) on one bar: 7 items per asset, and the state version."""
    return {
        "strategy_id": "wide",
        "name": "wide",
        "assets": [f"W{n:02d}/USD" for n in range(assets)],
        "timeframe": "1h",
        "entry": {"left": "volume", "op": ">", "right": 5},
        "execution_config": {
            "stop_loss": {"type": "percent", "value": 0.02},
            "take_profit": {"type": "percent", "value": 0.04},
        },
    }


def test_a_strategy_whose_worst_bar_cannot_commit_is_refused_when_written() -> None:
    with pytest.raises(StrategyInvalid) as info:
        parse_strategy(wide_strategy(15))
    assert info.value.problems == [
        (
            "assets",
            "15 assets can change up to 7 items each in one evaluation (107 with the state "
            "version and the event outbox), above the 100 one atomic commit may hold: with this "
            "execution_config at most 14 assets fit; split the assets over several strategies or lower "
            "execution_config.max_open_positions",
        )
    ]


def test_the_worst_bar_of_the_widest_accepted_strategy_commits_in_one_transaction(
    repos: DynamoRepositories, calls: Requests
) -> None:
    strategy = parse_strategy(wide_strategy(14))
    assert strategy.max_writes_per_evaluation == 100
    repos.strategies.put(strategy)
    t0 = 1_704_067_200_000
    bars = Candles.from_rows(
        [(t0, 100.0, 100.0, 100.0, 100.0, 10.0), (t0 + 3_600_000, 100.0, 100.0, 97.0, 99.0, 10.0)]
    )
    market = MemoryMarket({(asset, "1h"): bars for asset in strategy.assets})
    now = [t0 + 3_600_000]
    service = ExecutionService(repos.strategies, repos.states, market, "warn", lambda: now[0])
    assert len(service.evaluate_by_id("wide").positions) == 14  # everything enters at bar 0
    now[0] += 3_600_000
    calls.reset()
    result = service.evaluate_by_id("wide")  # every stop fills at 98 and everything re-enters
    assert [t.exit_price for t in result.closed_trades] == [98.0] * 14
    assert len(result.positions) == 14
    (transaction,) = [body for name, body in calls.log if name == "TransactWriteItems"]
    assert len(transaction["TransactItems"]) == 100  # with the outbox item of its 112 events
    assert repos.states.load([strategy])["wide"].version == 2


# --- trading breadth (DESIGN §11) -------------------------------------------------------


def test_trailing_levels_partial_fills_and_realized_pnl_persist_with_each_commit(
    repos: DynamoRepositories, calls: Requests
) -> None:
    """The real core over the real adapter: what is loaded back after each commit is the
    state the evaluation left, and a stop that only moved is one small update."""
    from engine.core.evaluate import evaluate

    from tests.support.core import SIGNAL, candles, flat_bars, market, now_after, strategy_doc

    strategy = parse_strategy(
        strategy_doc(
            strategy_id="trail",
            execution_config={
                "stop_loss": {"type": "trailing_percent", "value": 0.1},
                "take_profit": [
                    {"type": "percent", "value": 0.125, "fraction": 0.5},
                    {"type": "percent", "value": 0.25, "fraction": 0.5},
                ],
            },
        )
    )
    repos.strategies.put(strategy)
    # entry 100 (stop 90, targets 112.5 and 125); bar 3: target 1 fills, stop -> 99.9;
    # bar 4: only the stop moves (103.5); bar 5: the rest stops out at 103.5
    c = candles(
        flat_bars(
            7,
            b2=SIGNAL,
            b3=(100, 113, 100, 111, 1),
            b4=(111, 115, 110, 115, 1),
            b5=(115, 116, 103, 104, 1),
        )
    )
    data = market(strategy, {"BTC/USDT": c})
    transactions = []
    for bar in (2, 3, 4, 5):
        state = repos.states.load([strategy])["trail"]
        result = evaluate(strategy, state, data, now_after(c, bar))
        calls.reset()
        repos.states.commit(state, result.changes)
        transactions.append(calls.log[-1][1]["TransactItems"])
        loaded = repos.states.load([strategy])["trail"]
        assert loaded.positions == result.state.positions
        assert sorted(loaded.orders, key=lambda o: o.order_id) == sorted(
            result.state.orders, key=lambda o: o.order_id
        )
        assert loaded.realized_pnl == result.state.realized_pnl

    def items(transaction: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return sorted(
            (op, item[op]["TableName"]) for item in transaction for op in item if op != "_"
        )

    orders, outbox = OrderModel.Meta.table_name, OutboxModel.Meta.table_name
    positions, strategies = PositionModel.Meta.table_name, StrategyModel.Meta.table_name
    # bar 3 (the partial fill): strategy, position, the filled target, the stop's new
    # quantity, and the commit's events
    bar3 = [("Put", orders), ("Put", orders), ("Put", outbox), ("Put", positions)]
    assert items(transactions[1]) == sorted([*bar3, ("Update", strategies)])
    # bar 4: one update of the stop order's level beside the strategy item's version, and
    # the stop.moved event in the outbox
    assert items(transactions[2]) == sorted(
        [("Put", outbox), ("Update", orders), ("Update", strategies)]
    )
    assert loaded.positions == [] and loaded.realized_pnl == pytest.approx(6.25 + 1.75)
    assert StrategyModel.get("trail").realized_pnl == pytest.approx(8.0)
