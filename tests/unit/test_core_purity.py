"""The core is pure (docs/architecture.md): deterministic rules that a test, replay and every
Lambda share. It may import only the standard library's pure parts, numpy, TA-Lib and
pydantic, and itself; never I/O, clocks, logging, the environment or another layer."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parents[2] / "layers" / "engine" / "engine" / "core"

FORBIDDEN_MODULES = (
    "boto3",
    "botocore",
    "pynamodb",
    "aws_lambda_powertools",
    "aws_xray_sdk",
    "ccxt",
    "logging",
    "os",
    "socket",
    "subprocess",
    "threading",
    "requests",
    "urllib",
    "http",
    "engine.adapters",
    "engine.service",
    "engine.entrypoints",
    "engine.bootstrap",
    "engine.settings",
)
FORBIDDEN_NAMES = ("environ", "getenv", "print", "open", "time.time", "datetime.now")


def imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def called(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            names.append(ast.unparse(node.func))
        elif isinstance(node, ast.Attribute) and node.attr == "environ":
            names.append("environ")
    return names


MODULES = sorted(CORE.glob("*.py"))


def test_the_core_has_its_modules() -> None:
    assert {"strategy.py", "evaluate.py", "cooldown.py", "indicators.py"} <= {
        p.name for p in MODULES
    }


@pytest.mark.parametrize("path", MODULES, ids=lambda p: p.name)
def test_core_module_is_pure(path: Path) -> None:
    tree = ast.parse(path.read_text(), filename=str(path))
    bad_imports = [
        name
        for name in imported(tree)
        if any(name == f or name.startswith(f + ".") for f in FORBIDDEN_MODULES)
    ]
    assert bad_imports == [], f"{path.name} imports {bad_imports}"
    bad_calls = [
        name
        for name in called(tree)
        if name in FORBIDDEN_NAMES or name.endswith((".environ", ".getenv", ".now"))
    ]
    assert bad_calls == [], f"{path.name} calls {bad_calls}"


def test_the_lambda_functions_load_nothing_of_the_dev_tooling() -> None:
    """The layer leaves out entrypoints/local (layers/engine/Makefile): no handler may need it."""
    import json
    import os
    import subprocess
    import sys

    root = CORE.parents[3]
    code = (
        "import importlib.util, json, sys\n"
        "for name in ('evaluate_by_id', 'evaluate_by_object', 'evaluate_bulk'):\n"
        "    spec = importlib.util.spec_from_file_location(name, f'functions/{name}/app.py')\n"
        "    module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith(('moto', "
        "'engine.entrypoints.local', 'engine.entrypoints.cli', 'engine.service.report')))))\n"
    )
    env = {
        **os.environ,
        "AWS_REGION": "us-east-1",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "PYTHONPATH": str(root / "layers" / "engine"),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.splitlines()[-1]) == []
