"""Handler import time against the built layer (`make bench-layer`, after `make sam-build`).

`bench/bulk.py` times the handlers in the development virtualenv (Python 3.11). This times
what Lambda loads: `.aws-sam/build`'s function folders and EngineLayer (Python 3.12 wheels and
bytecode), on a CPython 3.12, with the function folder and the layer first on sys.path as
Lambda puts /var/task and /opt/python. botocore comes from that interpreter's environment, as
it comes from the runtime in Lambda; packages the runtime does not have but the SAM CLI's
environment does (awscrt, pyOpenSSL: botocore and urllib3 import them when present) are
hidden. Median of 7 fresh interpreters per function; the last line is JSON.

    .venv-sam/bin/python bench/layer_import.py
"""

from __future__ import annotations

import json
import os
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / ".aws-sam" / "build"
LAYER = BUILD / "EngineLayer" / "python"
RUNS = 7
NOT_IN_THE_RUNTIME = ("awscrt", "OpenSSL")

_IMPORT = """
import sys, time
sys.path[:0] = [{function!r}, {layer!r}]
for name in {hidden!r}:
    sys.modules[name] = None  # absent from Lambda's runtime
start = time.perf_counter()
import app
print(time.perf_counter() - start)
"""


def main() -> int:
    if sys.version_info[:2] != (3, 12):
        print(f"needs CPython 3.12, the functions' runtime (this is {sys.version})")
        return 2
    if not LAYER.is_dir():
        print(f"no built layer at {LAYER}: run `make sam-build` first")
        return 2
    sys.path.insert(0, str(ROOT / "layers" / "engine"))
    from lambda_env import lambda_environment, python_output  # bench/, first on sys.path

    figures: dict[str, float] = {}
    for function in sorted(p for p in BUILD.iterdir() if (p / "app.py").is_file()):
        env = {
            "PATH": os.environ.get("PATH", ""),
            **lambda_environment(function),
            "PYTHONDONTWRITEBYTECODE": "1",  # /var/task and /opt are read-only in Lambda
        }
        code = _IMPORT.format(function=str(function), layer=str(LAYER), hidden=NOT_IN_THE_RUNTIME)
        times = [float(python_output(["-c", code], env, function)) for _ in range(RUNS)]
        figures[function.name] = round(statistics.median(times), 3)
        print(f"{function.name}: import {figures[function.name]:.3f} s (median of {RUNS})")
    print(json.dumps({"layer_handler_import_s": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
