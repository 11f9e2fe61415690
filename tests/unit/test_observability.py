"""X-Ray's Tracer is made, and botocore patched, when a handler is first invoked, not when it is
imported (issue 14: the patch imports botocore's client machinery, a quarter of a handler's
import; the Tracer, X-Ray's recorder), and it does happen: in Lambda's environment, by the
first invocation, before any request."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUNCTION = ROOT / "functions" / "evaluate_by_id"

_PROBE = """
import json, sys
import app
imported = "botocore.client" in sys.modules
xray = "aws_xray_sdk.core" in sys.modules
try:
    app.lambda_handler({"not": "an api gateway event"}, None)
except Exception:
    pass  # no context, no route: what matters is what the wrapper did first
import botocore.client
print(json.dumps({
    "client_at_import": imported,
    "xray_at_import": xray,
    "xray_after": "aws_xray_sdk.core" in sys.modules,
    "patched": getattr(botocore.client, "_xray_enabled", False),  # set by X-Ray's patch
}))
"""


def lambda_env(function: Path = FUNCTION) -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        from lambda_env import handler_environment
    finally:
        sys.path.remove(str(ROOT / "bench"))
    return handler_environment(function, ROOT / "layers" / "engine")


def test_the_handler_patches_botocore_on_its_first_invocation_not_at_import() -> None:
    answer = subprocess.run(
        [sys.executable, "-c", _PROBE],
        capture_output=True,
        text=True,
        env=lambda_env(),
        cwd=FUNCTION,
        check=True,
    )
    assert json.loads(answer.stdout.strip().splitlines()[-1]) == {
        "client_at_import": False,
        "xray_at_import": False,  # the Tracer is made by the first invocation
        "xray_after": True,
        "patched": True,
    }


_IMPORTED = """
import json, sys
import app
print(json.dumps(sorted(
    m for m in ("boto3", "s3transfer", "urllib3", "aws_xray_sdk") if m in sys.modules
)))
"""


@pytest.mark.parametrize("function", ["deliver_webhook", "notify_telegram", "publish_events"])
def test_event_functions_import_neither_boto3_nor_an_http_stack(function: str) -> None:
    """Their clients come from botocore (engine.adapters.aws), made at the first invocation:
    boto3 with s3transfer, and botocore's urllib3 stack, were a third of their import. They
    trace nothing, so the X-Ray SDK is never loaded either."""
    folder = ROOT / "functions" / function
    answer = subprocess.run(
        [sys.executable, "-c", _IMPORTED],
        capture_output=True,
        text=True,
        env=lambda_env(folder),
        cwd=folder,
        check=True,
    )
    assert json.loads(answer.stdout.strip().splitlines()[-1]) == []
