"""The local stack (`python -m engine.entrypoints.local`) on free ports, one per test module."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def stack(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[dict[str, Any]]:
    """The stack; a test module's STACK_ENV (a dict) adds to its environment."""
    api_port, db_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "LOCAL_API_PORT": str(api_port),
        "LOCAL_DYNAMODB_PORT": str(db_port),
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "STALE_DATA_POLICY": "warn",
        **getattr(request.module, "STACK_ENV", {}),
    }
    env.pop("DYNAMODB_ENDPOINT", None)
    log = (tmp_path_factory.mktemp("stack") / "stack.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "engine.entrypoints.local"],
        env=env,
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{api_port}"
    deadline = time.time() + 60
    while True:
        try:
            if requests.get(f"{base}/openapi.json", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            raise RuntimeError(f"local stack did not start: {Path(log.name).read_text()[-3000:]}")
        time.sleep(0.2)
    cli_env = {**env, "DYNAMODB_ENDPOINT": f"http://127.0.0.1:{db_port}"}
    yield {
        "base": f"{base}/api/v1/execution",
        "root": base,
        "env": cli_env,
        "db": cli_env["DYNAMODB_ENDPOINT"],
    }
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
