"""Headless Chromium for the tests that open report.html: Debian's `chromium` package, installed
quietly by the first test that needs it when it is missing (`make test` works on a fresh
machine), driven through playwright. Where it cannot be installed the test is skipped and says
why.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
APT_GET = ("apt-get", "-qq", "-o", "DPkg::Lock::Timeout=600", "-o", "Dpkg::Use-Pty=0")


def find_chromium() -> str | None:
    given = os.environ.get("CHROMIUM")
    if given and Path(given).is_file():
        return given
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _apt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*APT_GET, *args], env=APT_ENV, capture_output=True, text=True, timeout=1200
    )


def install_chromium() -> str:
    """The path of a Chromium, installing Debian's package first when there is none."""
    found = find_chromium()
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip("no Chromium, and no apt-get to install it (set CHROMIUM=/path/to/chromium)")
    if os.geteuid() != 0:
        pytest.skip("no Chromium, and installing Debian's chromium package needs root")
    done = _apt("install", "-y", "--no-install-recommends", "chromium")
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        _apt("update")
        done = _apt("install", "-y", "--no-install-recommends", "chromium")
    found = find_chromium()
    if done.returncode != 0 or found is None:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        pytest.skip(f"could not install Debian's chromium package: {last}")
    return found
