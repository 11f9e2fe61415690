"""Wiring from configuration: what the environment chooses, and bad values named."""

from __future__ import annotations

import pytest
from engine.adapters.marketdata import FileProvider
from engine.bootstrap import build_service

ENV = {"MARKET_DATA_PROVIDER": "file", "MARKET_DATA_DIR": "/nonexistent"}


def test_defaults_commit_one_at_a_time_and_reject_stale_data() -> None:
    service = build_service(ENV)
    assert service.commit_workers == 1
    assert service.stale_policy == "reject"
    assert isinstance(service.market_data, FileProvider)


def test_commit_workers_come_from_the_environment() -> None:
    assert build_service({**ENV, "COMMIT_WORKERS": "8"}).commit_workers == 8


@pytest.mark.parametrize("value", ["0", "-2", "eight", "1.5"])
def test_a_bad_commit_workers_value_is_named(value: str) -> None:
    with pytest.raises(ValueError, match="COMMIT_WORKERS must be a whole number"):
        build_service({**ENV, "COMMIT_WORKERS": value})


def test_the_template_runs_commits_concurrently() -> None:
    from engine.entrypoints.local.template import literal_environment

    assert build_service({**ENV, **literal_environment()}).commit_workers == 8


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
