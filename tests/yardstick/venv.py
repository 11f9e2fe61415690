"""The yardstick's own virtual environment, .venv-yardstick: backtesting.py and pandas as
pyproject.toml's `yardstick` extra pins them, made by the first test that needs it (so that
`make test` works on a fresh machine) and again whenever the pins change."""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".venv-yardstick"


def pins() -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return list(project["optional-dependencies"]["yardstick"])


def yardstick_python() -> Path:
    wanted = pins()
    stamp = VENV / f".installed-{hashlib.sha256(' '.join(wanted).encode()).hexdigest()[:12]}"
    python = VENV / "bin" / "python"
    if stamp.exists():
        return python
    ROOT.joinpath(".venv-yardstick.lock").touch()
    with open(ROOT / ".venv-yardstick.lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one maker at a time (pytest-xdist workers)
        if stamp.exists():
            return python
        base = getattr(sys, "_base_executable", sys.executable)
        steps = [
            [base, "-m", "venv", "--clear", str(VENV)],
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *wanted,
            ],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                last = (done.stderr.strip().splitlines() or ["no output"])[-1]
                pytest.skip(f"cannot make {VENV.name} with {' '.join(wanted)}: {last}")
        stamp.touch()
    return python
