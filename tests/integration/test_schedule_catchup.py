"""The schedule never skips a bar (issue 16), on moto's DynamoDB through the bulk handler.

Due means "the newest closed bar, by the clock, is after the bar the strategy was last
evaluated at", not "a bar closed since the previous tick": a missed, late, duplicated or
out-of-order tick is made good by the next one that arrives.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from engine import bootstrap
from engine.adapters.dynamodb import RetryPolicy, dynamo_repositories
from engine.adapters.dynamodb.models import OrderModel
from engine.core.candles import Candles
from engine.core.strategy import Strategy, parse_strategy
from engine.core.timeframes import timeframe_ms
from engine.service.execution import ExecutionService
from engine.settings import Settings

from tests.support.trials import (
    T0,
    LambdaContext,
    MemoryMarket,
    bulk_handler_module,
    moto_tables,
    patched,
    scheduled_event,
    sqs_record,
    table_items,
)

H = 3_600_000
MINUTE = 60_000
NOON = T0 + 12 * H  # 2026-01-01T12:00:00Z


def spiking_strategy(sid: str, timeframe: str = "1h") -> Strategy:
    """Enters on every bar whose volume is above 5: each evaluated spike is one entry."""
    return parse_strategy(
        {
            "strategy_id": sid,
            "name": sid,
            "assets": ["AAA/USD"],
            "timeframe": timeframe,
            "entry": {"left": "volume", "op": ">", "right": 5},
            "execution_config": {"max_open_positions": 100},
        }
    )


def flat_candles(timeframe: str, until_ms: int, spikes: set[int]) -> Candles:
    """Flat prices from T0 to `until_ms`; volume 10 on the bars opening at `spikes`, else 1."""
    step = timeframe_ms(timeframe)
    times = np.arange(T0, until_ms, step, dtype=np.int64)
    price = np.full(len(times), 100.0)
    volume = np.where(np.isin(times, sorted(spikes)), 10.0, 1.0)
    return Candles(time=times, open=price, high=price, low=price, close=price, volume=volume)


class Ticks:
    """The bulk handler on moto, with a clock the test moves."""

    def __init__(self) -> None:
        repos = dynamo_repositories(retry=RetryPolicy(attempts=4, sleep=lambda _: None))
        self.strategies = repos.strategies
        self.market = MemoryMarket()
        self.now = T0
        self.service = ExecutionService(
            strategies=repos.strategies,
            states=repos.states,
            market_data=self.market,
            stale_policy="reject",
            clock=lambda: self.now,
        )
        self.handler = bulk_handler_module()
        self.context = LambdaContext()

    def tick(self, scheduled_ms: int, arrives_ms: int | None = None) -> dict[str, Any]:
        """The scheduled event for `scheduled_ms`, delivered at `arrives_ms` (default: then)."""
        self.now = scheduled_ms if arrives_ms is None else arrives_ms
        service = self.service
        with (
            patched(self.handler, service=lambda: service, settings=lambda: Settings()),
            patched(bootstrap, service=lambda: service),
        ):
            answer: dict[str, Any] = self.handler.lambda_handler(
                scheduled_event(scheduled_ms), self.context
            )
        return answer

    def deliver(self, body: str, *, at: int) -> dict[str, Any]:
        """One fan-out chunk, handed to the handler as SQS would, at `at`."""
        self.now = at
        service = self.service
        with (
            patched(self.handler, service=lambda: service, settings=lambda: Settings()),
            patched(bootstrap, service=lambda: service),
        ):
            answer: dict[str, Any] = self.handler.lambda_handler(
                {"Records": [sqs_record(body, f"msg-{at}")]}, self.context
            )
        return answer

    def entry_bars(self, sid: str) -> list[int]:
        """Open times of the bars at which `sid` entered, one per enter_long order."""
        return sorted(
            int(o["created_at"])
            for o in table_items(OrderModel)
            if o["strategy_id"] == sid and o["side"] == "enter_long"
        )


@pytest.fixture
def ticks() -> Iterator[Ticks]:
    with moto_tables():
        yield Ticks()


@pytest.mark.parametrize(
    ("before", "after"),
    [(NOON - MINUTE, NOON + MINUTE), (NOON - 1000, NOON + MINUTE + 1000)],
    ids=["11:59:00 and 12:01:00", "11:59:59 and 12:01:01"],
)
def test_a_missed_noon_tick_still_evaluates_the_bar_that_closed_at_noon(
    ticks: Ticks, before: int, after: int
) -> None:
    # the bar that opened at 11:00 and closed at 12:00 spikes: evaluating it enters
    ticks.market.candles[("AAA/USD", "1h")] = flat_candles("1h", NOON + 2 * H, {NOON - H})
    ticks.strategies.put(spiking_strategy("hourly"))
    ticks.tick(before)  # evaluates the 10:00 bar (first evaluation)
    assert ticks.entry_bars("hourly") == []
    # the 12:00:00 tick never arrives
    ticks.tick(after)
    assert ticks.entry_bars("hourly") == [NOON - H]


def emf(out: str) -> dict[str, float]:
    """The metrics of every EMF record printed, summed by name."""
    totals: dict[str, float] = {}
    for line in out.splitlines():
        if not line.startswith("{") or '"_aws"' not in line:
            continue
        record = json.loads(line)
        for directive in record["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                values = record[metric["Name"]]
                values = values if isinstance(values, list) else [values]
                totals[metric["Name"]] = totals.get(metric["Name"], 0) + sum(values)
    return totals


def test_a_late_chunk_evaluates_the_newest_bar_and_says_which_it_passed_over(
    ticks: Ticks, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """The chunk of the 12:00 tick (for the 11:45 bar of a 15m strategy) is processed at
    12:30: it evaluates the 12:15 bar, and the answer, a log record and two metrics say that
    the 11:45 and 12:00 bars were passed over."""
    quarter = 15 * MINUTE
    ticks.market.candles[("AAA/USD", "15m")] = flat_candles("15m", NOON + 2 * H, set())
    ticks.strategies.put(spiking_strategy("quarterly", "15m"))
    ticks.tick(NOON - quarter + 10_000)  # 11:45:10 evaluates the 11:30 bar
    capsys.readouterr()
    body = json.dumps({"strategy_ids": ["quarterly"], "scheduled_time_ms": NOON})
    answer = ticks.deliver(body, at=NOON + 30 * MINUTE)
    assert answer == {"batchItemFailures": []}
    metrics = emf(capsys.readouterr().out)
    assert metrics["LateEvaluations"] == 1
    assert metrics["BarsPassedOver"] == 2
    assert metrics["ScheduledSkipped"] == 0
    (late,) = [r for r in caplog.records if "delivered late" in r.getMessage()]
    assert late.__dict__["scheduled_bar"] == "2026-01-01T11:45:00Z"
    assert late.__dict__["bar"] == "2026-01-01T12:15:00Z"
    assert late.__dict__["bars_passed_over"] == 2


def test_a_chunk_skips_a_strategy_paused_after_it_was_queued(
    ticks: Ticks, capsys: pytest.CaptureFixture[str]
) -> None:
    ticks.market.candles[("AAA/USD", "1h")] = flat_candles("1h", NOON + 2 * H, {NOON - H})
    ticks.strategies.put(spiking_strategy("hourly"))
    body = json.dumps({"strategy_ids": ["hourly"], "scheduled_time_ms": NOON})
    paused = parse_strategy(
        {**json.loads(spiking_strategy("hourly").canonical_json()), "status": "paused"}
    )
    ticks.strategies.put(paused)  # after the tick queued it
    capsys.readouterr()
    assert ticks.deliver(body, at=NOON + 20_000) == {"batchItemFailures": []}
    assert emf(capsys.readouterr().out)["ScheduledSkipped"] == 1
    assert ticks.entry_bars("hourly") == []  # the spike at 11:00 was not acted on
