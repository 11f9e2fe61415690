"""The environment Lambda gives a function, for the benchmarks that time handler imports, and
the code that imports a handler's libraries without the handler (its import's floor).

What the runtime sets, and what template.yaml's Globals set as plain values. They matter:
outside Lambda the X-Ray SDK builds its centralized sampler at import, creating two botocore
clients (~0.1 s) that it never builds in Lambda, where the service makes the sampling
decision; and Powertools' Tracer only patches botocore (as deployed) when it sees
LAMBDA_TASK_ROOT.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from engine.entrypoints.local.template import literal_environment


def lambda_environment(function_dir: Path) -> dict[str, str]:
    return {
        **literal_environment(),
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_EXECUTION_ENV": "AWS_Lambda_python3.12",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024",
        "AWS_LAMBDA_FUNCTION_NAME": function_dir.name,
        "LAMBDA_TASK_ROOT": str(function_dir),
    }


def handler_environment(
    function_dir: Path, engine: Path, pycache: str | None = None
) -> dict[str, str]:
    """The environment of a process that loads `function_dir`'s handler as Lambda would: this
    one's without its AWS and Powertools settings, Lambda's on top, the engine layer at
    `engine` on the path, and placeholder credentials (the first request makes a client,
    which wants some; none is used). With `pycache`, bytecode is written there even where
    this environment forbids writing it, as the layer ships it."""
    drop: tuple[str, ...] = ("AWS_", "POWERTOOLS_")
    if pycache is not None:
        drop += ("PYTHONDONTWRITEBYTECODE",)
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    if pycache is not None:
        env["PYTHONPYCACHEPREFIX"] = pycache
    return {
        **env,
        **lambda_environment(function_dir),
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "PYTHONPATH": str(engine),
    }


# The modules `import app` loads that are not the engine's (nor the handler), in the order
# it loads them: what importing the handler costs before any line of ours runs.
LIBRARY_MODULES = """
import sys
before = set(sys.modules)
import app
ours = ("engine", "app")
print(" ".join(m for m in sys.modules if m not in before and m.split(".")[0] not in ours))
"""


def python_output(argv: Sequence[str], env: dict[str, str], cwd: Path) -> str:
    """The standard output of `python argv...` (this interpreter) in `env` and `cwd`; a
    failure raises."""
    return subprocess.run(
        [sys.executable, *argv],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def library_modules(env: dict[str, str], cwd: Path) -> list[str]:
    """The modules LIBRARY_MODULES finds for the handler in `cwd`, in `env`: the arguments
    LIBRARIES takes."""
    return python_output(["-c", LIBRARY_MODULES], env, cwd).split()


# Import those modules alone, in that order, with the collector paused as app.py's first
# import (engine.entrypoints.coldstart) pauses it.
LIBRARIES = """
import gc, importlib, sys, time
gc.disable()
t0 = time.perf_counter()
for name in sys.argv[1:]:
    if name not in sys.modules:
        try:
            importlib.import_module(name)
        except ImportError:  # a name a C extension registers that no finder can load
            pass
print(time.perf_counter() - t0)
"""
