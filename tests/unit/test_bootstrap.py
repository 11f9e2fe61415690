"""Wiring from the settings: what the environment chooses, and bad values named at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine.adapters.marketdata import FileProvider
from engine.bootstrap import build_service as build
from engine.settings import EventSettings, Settings

ENV = {"MARKET_DATA_PROVIDER": "file", "MARKET_DATA_DIR": "/nonexistent"}


def build_service(env: dict[str, str]) -> object:
    return build(Settings.from_env(env))


def test_defaults_commit_one_at_a_time_and_reject_stale_data() -> None:
    service: Any = build_service(ENV)
    assert service.commit_workers == 1
    assert service.stale_policy == "reject"
    assert isinstance(service.market_data, FileProvider)


def test_commit_workers_come_from_the_environment() -> None:
    assert build_service({**ENV, "COMMIT_WORKERS": "8"}).commit_workers == 8  # type: ignore[attr-defined]


@pytest.mark.parametrize("value", ["0", "-2", "eight", "1.5"])
def test_a_bad_commit_workers_value_is_named(value: str) -> None:
    with pytest.raises(ValueError, match="COMMIT_WORKERS must be a whole number"):
        build_service({**ENV, "COMMIT_WORKERS": value})


def test_the_template_runs_commits_concurrently() -> None:
    from engine.entrypoints.local.template import literal_environment

    assert build_service({**ENV, **literal_environment()}).commit_workers == 8  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", ["SCHEDULE_INTERVAL_SECONDS", "BULK_CHUNK_SIZE"])
def test_the_bulk_handler_names_a_bad_schedule_setting_at_start(name: str) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    handler = Path(__file__).resolve().parents[2] / "functions" / "evaluate_bulk"
    answer = subprocess.run(
        [sys.executable, "-c", "import app"],
        cwd=handler,
        env={
            **os.environ,
            name: "ten",
            "AWS_REGION": "us-east-1",
            "POWERTOOLS_TRACE_DISABLED": "1",
        },
        capture_output=True,
        text=True,
        check=False,
    )
    assert answer.returncode != 0
    assert f"{name} must be a whole number of at least 1, not 'ten'" in answer.stderr


def test_settings_name_every_bad_value() -> None:
    cases = {
        "STALE_DATA_POLICY": ("sometimes", "STALE_DATA_POLICY must be one of reject, warn"),
        "HISTORY_TTL_DAYS": ("-1", "HISTORY_TTL_DAYS must be a whole number of 0 or more"),
        "MARKET_DATA_PROVIDER": ("bloomberg", "MARKET_DATA_PROVIDER must be one of"),
        "MARKET_DATA_CONCURRENCY": ("0", "MARKET_DATA_CONCURRENCY must be a whole number"),
        "CCXT_SYMBOL_MAP": ("[1]", "CCXT_SYMBOL_MAP must be a JSON object"),
        "WEBHOOK_ATTEMPTS": ("0", "WEBHOOK_ATTEMPTS must be a whole number"),
    }
    for name, (value, message) in cases.items():
        with pytest.raises(ValueError, match=message):
            Settings.from_env({name: value})


def test_settings_from_an_empty_environment_are_the_documented_defaults() -> None:
    config = Settings.from_env({})
    assert config.dynamodb_endpoint is None and config.region == "us-east-1"
    assert config.table_names["StrategyModel"] == "execution-strategies"
    assert config.stale_policy == "reject" and config.commit_workers == 1
    assert config.market_data.provider == "dynamodb" and config.market_data.concurrency == 8
    assert (config.bulk_chunk_size, config.schedule_interval_ms) == (200, 60_000)
    assert config.events == EventSettings()


def test_the_event_functions_settings_come_from_the_environment_and_name_what_is_missing() -> None:
    events = Settings.from_env(
        {"EVENT_BUS_NAME": "orders", "WEBHOOK_ATTEMPTS": "5", "TELEGRAM_CHAT_ID": " 42 "}
    ).events
    assert (events.bus_name, events.webhook_attempts, events.telegram_chat_id) == (
        "orders",
        5,
        "42",
    )
    assert events.required("bus_name") == "orders"
    with pytest.raises(ValueError, match=r"^WEBHOOK_URL is not set; this function needs it$"):
        events.required("webhook_url")


def test_build_service_points_the_models_where_the_settings_say() -> None:
    from engine.adapters.dynamodb import models

    from tests.support.aws import models_restored

    with models_restored():
        saved = {m: m.Meta.table_name for m in models.ALL_MODELS}
        try:
            build_service({**ENV, "DYNAMODB_ENDPOINT": "http://127.0.0.1:9", "ORDERS_TABLE": "o"})
            assert models.OrderModel.Meta.host == "http://127.0.0.1:9"
            assert models.OrderModel.Meta.table_name == "o"
        finally:
            for model, name in saved.items():
                model.Meta.table_name = name


def test_no_function_reads_the_environment_itself() -> None:
    """Every variable is read by engine.settings (one place, documented there)."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "functions"
    readers = {}
    for app in sorted(root.glob("*/app.py")):
        tree = ast.parse(app.read_text())
        names = {
            node.attr if isinstance(node, ast.Attribute) else node.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute | ast.Name)
        }
        readers[app.parent.name] = sorted(names & {"environ", "getenv"})
    assert len(readers) == 6
    assert readers == {name: [] for name in readers}


@pytest.mark.parametrize(
    "function",
    sorted(
        p.parent.name for p in (Path(__file__).resolve().parents[2] / "functions").glob("*/app.py")
    ),
)
def test_a_handlers_imports_run_without_the_garbage_collector_and_leave_it_on(
    function: str,
) -> None:
    """engine.entrypoints.coldstart pauses the collector for a cold start's imports and each
    app.py resumes it last, its objects frozen: no collection runs while it loads (compiling
    app.py itself, before the pause, may run one), and the collector is on for the requests."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    code = (
        "import gc, sys\n"
        "starts = []\n"
        "paused = lambda: 'engine.entrypoints.coldstart' in sys.modules\n"
        "gc.callbacks.append(lambda phase, info: phase == 'start' and paused() and starts.append(1))\n"
        "import app\n"
        "print(len(starts), gc.isenabled(), gc.get_freeze_count() > 0)\n"
    )
    answer = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root / "functions" / function,
        env={"PATH": "", "PYTHONPATH": str(root / "layers" / "engine"), "AWS_REGION": "us-east-1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert answer.stdout.split() == ["0", "True", "True"]
