"""Regenerate docs/report.png: replay the example strategy on the sample candles and take a
screenshot of its report.html in headless Chromium (installed like the browser test does).

    .venv/bin/python scripts/report_screenshot.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.browser import install_chromium  # noqa: E402


def main() -> None:
    chromium = install_chromium()
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as out:
        subprocess.run(
            [
                sys.executable, "-m", "engine", "replay",
                "--strategy", str(ROOT / "examples/strategies/rsi_meanrev.json"),
                "--candles", str(ROOT / "examples/candles/btc_1h_sample.csv"),
                "--from", "2024-06-14", "--out", out, "--no-progress",
            ],
            check=True,
            cwd=ROOT,
        )  # fmt: skip
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 1500})
            page.goto((Path(out) / "report.html").as_uri())
            page.wait_for_timeout(2500)
            page.screenshot(path=str(ROOT / "docs" / "report.png"), full_page=False)
            browser.close()
    print(f"wrote {ROOT / 'docs' / 'report.png'}")


if __name__ == "__main__":
    main()
