"""The CLI's storage target: chosen in one visible order, never AWS unless asked."""

from __future__ import annotations

import argparse
import socket
from collections.abc import Iterator

import pytest
from engine.entrypoints.cli.base import CommandError
from engine.entrypoints.cli.commands import stored_document
from engine.entrypoints.cli.target import choose_target, settings_for


def args(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"local": False, "aws": False, "endpoint": None, **given})


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something listens on, as the local stack's DynamoDB would."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


@pytest.fixture
def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # closed again when the fixture returns


def test_a_running_local_stack_is_used_without_any_variable(listening: int) -> None:
    target = choose_target(args(), {"LOCAL_DYNAMODB_PORT": str(listening)})
    assert target.endpoint == f"http://127.0.0.1:{listening}"
    assert target.describe().startswith(f"target: DynamoDB at http://127.0.0.1:{listening} (")


def test_nothing_running_and_nothing_chosen_stops_with_the_fix(closed_port: int) -> None:
    with pytest.raises(CommandError) as info:
        choose_target(args(), {"LOCAL_DYNAMODB_PORT": str(closed_port)})
    message = info.value.message
    assert "make dev" in message and "--aws" in message and "\n" not in message


def test_aws_is_reached_only_when_asked(closed_port: int) -> None:
    env = {"LOCAL_DYNAMODB_PORT": str(closed_port), "AWS_ACCESS_KEY_ID": "AKIA..."}
    with pytest.raises(CommandError):
        choose_target(args(), env)  # credentials alone do not choose AWS
    assert choose_target(args(aws=True), env).endpoint is None
    assert choose_target(args(), {**env, "ENGINE_TARGET": "aws"}).endpoint is None


def test_the_order_is_endpoint_then_local_then_environment(listening: int) -> None:
    env = {"LOCAL_DYNAMODB_PORT": str(listening), "DYNAMODB_ENDPOINT": "http://db:1"}
    assert choose_target(args(endpoint="http://x:2"), env).endpoint == "http://x:2"
    assert choose_target(args(local=True), env).endpoint == f"http://127.0.0.1:{listening}"
    assert choose_target(args(), env).endpoint == "http://db:1"


def test_local_when_no_stack_runs_says_so(closed_port: int) -> None:
    with pytest.raises(CommandError, match=r"no local stack answers at .*make dev"):
        choose_target(args(local=True), {"LOCAL_DYNAMODB_PORT": str(closed_port)})


def test_aws_without_credentials_says_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: object
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent/config")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with pytest.raises(CommandError, match=r"no AWS credentials found.*--local"):
        settings_for(args(aws=True), {})


def test_a_local_target_needs_no_credentials_and_is_printed(
    listening: int, capsys: pytest.CaptureFixture[str]
) -> None:
    env: dict[str, str] = {"LOCAL_DYNAMODB_PORT": str(listening)}
    config = settings_for(args(), env)
    assert config.dynamodb_endpoint == f"http://127.0.0.1:{listening}"
    assert env["AWS_ACCESS_KEY_ID"] == "local"  # moto takes any; a fresh machine has none
    assert capsys.readouterr().err.startswith("target: DynamoDB at http://127.0.0.1:")


def test_strategies_get_prints_no_absent_legacy_keys() -> None:
    from engine.core.strategy import parse_strategy

    document = {
        "strategy_id": "s",
        "name": "s",
        "assets": ["BTC/USDT"],
        "timeframe": "1h",
        "indicators": {"rsi": {"fn": "RSI", "params": {"timeperiod": 14}}},
        "entry": {"left": "rsi", "op": "<", "right": 30},
        "execution_config": {"stop_loss": {"type": "percent", "value": 0.05}},
    }
    strategy = parse_strategy(document)
    shown = stored_document(strategy)
    assert not {"cooldown_bars", "daily_momentum_limit", "weekly_momentum_limit"} & set(
        shown["execution_config"]
    )
    assert "timeframe" not in shown["indicators"]["rsi"]
    assert parse_strategy(shown) == strategy  # stores back as the same strategy
    legacy = {**document, "execution_config": {**document["execution_config"], "cooldown_bars": 3}}
    assert stored_document(parse_strategy(legacy))["execution_config"]["cooldown_bars"] == 3
