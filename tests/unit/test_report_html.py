"""report.html: self-contained, and it draws in a real browser (headless Chromium).

The browser test installs Debian's chromium package when it is missing (tests/browser.py) and
checks that the page loads with the network cut off, that bokeh drew its canvases, that the
screenshot is not blank, and that the browser logged no JavaScript error.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from engine.adapters.candle_files import read_csv
from engine.core.candles import Candles
from engine.core.strategy import parse_strategy
from engine.service.replay import replay
from engine.service.report.build import build_report
from engine.service.report.html import MAX_BARS, render_report_html

from tests.support.browser import install_chromium
from tests.support.core import DESIGN_EXAMPLE, T0, H

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_CANDLES = REPO / "examples" / "candles" / "btc_1h_sample.csv"


def example_report(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    result = replay(parse_strategy(DESIGN_EXAMPLE), read_csv(EXAMPLE_CANDLES), progress=False)
    report = build_report(result)
    path = tmp_path / "report.html"
    path.write_text(render_report_html(result, report), encoding="utf-8")
    return path, report.stats


def test_the_report_is_one_file_that_needs_no_network(tmp_path: Path) -> None:
    path, stats = example_report(tmp_path)
    text = path.read_text()
    # no script, stylesheet or image is fetched from anywhere
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=", text)
    assert "TradingView Lightweight Charts" in text  # the library is inlined
    assert len(text) < 2_000_000
    assert "Statistics" in text and "Trades" in text
    assert stats["trades"] > 0


def test_a_long_history_is_drawn_in_groups_and_says_so() -> None:
    n = MAX_BARS + 5
    rng = np.random.default_rng(1)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    history = Candles(
        T0 + np.arange(n, dtype=np.int64) * H,
        open_,
        np.maximum(open_, close) * 1.002,
        np.minimum(open_, close) * 0.998,
        close,
        np.ones(n),
    )
    strategy = parse_strategy(DESIGN_EXAMPLE)
    result = replay(strategy, history, progress=False)
    text = render_report_html(result, build_report(result))
    assert f"{n:,} bars: candles, indicators and equity are drawn 2 bars at a time" in text
    assert len(text) < 6_000_000


def two_asset_report(tmp_path: Path) -> Path:
    """Two assets in one account, on clocks that differ (ETH starts later, has gaps)."""
    doc = json.loads(json.dumps(DESIGN_EXAMPLE))
    doc["assets"] = ["BTC/USDT", "ETH/USDT"]
    doc["indicators"]["sma"]["params"]["timeperiod"] = 20
    history = read_csv(EXAMPLE_CANDLES)
    eth = history.tail(3000)
    keep = np.ones(len(eth), dtype=bool)
    keep[100:110] = False
    eth = Candles(*(getattr(eth, f)[keep] * (0.05 if f in PRICES else 1) for f in FIELDS))
    eth = Candles(eth.time.astype(np.int64), eth.open, eth.high, eth.low, eth.close, eth.volume)
    result = replay(parse_strategy(doc), {"BTC/USDT": history, "ETH/USDT": eth}, progress=False)
    path = tmp_path / "two.html"
    path.write_text(render_report_html(result, build_report(result)), encoding="utf-8")
    return path


def long_short_report(tmp_path: Path) -> Path:
    """The long/short example strategy (trailing stops, scale-outs) on the sample candles."""
    doc = json.loads((REPO / "examples" / "strategies" / "breadth_long_short.json").read_text())
    result = replay(parse_strategy(doc), read_csv(EXAMPLE_CANDLES), "BTC/USDT", progress=False)
    path = tmp_path / "long_short.html"
    path.write_text(render_report_html(result, build_report(result)), encoding="utf-8")
    return path


def test_the_report_tells_shorts_from_longs(tmp_path: Path) -> None:
    text = long_short_report(tmp_path).read_text()
    data = json.loads(
        re.search(r'id="report-data">(.*?)</script>', text, re.S).group(1).replace("<\\/", "</")  # type: ignore[union-attr]
    )
    markers = data["charts"][0]["markers"]
    entries = [m for m in markers if m["kind"] == "entry"]
    shorts = [m for m in entries if not m["up"]]
    longs = [m for m in entries if m["up"]]
    assert shorts and longs  # the example trades both sides on the sample
    assert all(m["text"].startswith("short") for m in shorts)
    assert not any(m["text"].startswith("short") for m in longs)
    assert {m["colour"] for m in shorts}.isdisjoint({m["colour"] for m in longs})
    # a long is closed by selling (arrow down), a short by buying (arrow up): as many up
    # exits as short entries closed, down exits as long ones
    exits = [m for m in markers if m["kind"] == "exit"]
    rows = re.findall(
        r"<tr><td>\d+</td><td class='l'>[^<]*</td><td class='l'>(long|short)</td>", text
    )
    assert len(rows) == len(exits) and "short" in rows and "long" in rows
    assert sum(m["up"] for m in exits) == rows.count("short")


PRICES = ("open", "high", "low", "close")
FIELDS = ("time", "open", "high", "low", "close", "volume")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["example", "two assets", "long and short"])
def test_the_report_draws_in_headless_chromium(tmp_path: Path, which: str) -> None:
    chromium = install_chromium()
    from playwright.sync_api import sync_playwright

    path = {
        "example": lambda: example_report(tmp_path)[0],
        "two assets": lambda: two_asset_report(tmp_path),
        "long and short": lambda: long_short_report(tmp_path),
    }[which]()
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.route(re.compile(r"^https?://"), lambda route: route.abort())  # offline
            page.goto(path.as_uri())
            page.wait_for_function("document.querySelectorAll('canvas').length > 4", timeout=30_000)
            page.wait_for_timeout(1000)  # let the charts paint
            canvases = page.evaluate(
                """() => {
                  const found = [];
                  const walk = (root) => {
                    for (const el of root.querySelectorAll('*')) {
                      if (el.tagName === 'CANVAS') found.push([el.width, el.height]);
                      if (el.shadowRoot) walk(el.shadowRoot);
                    }
                  };
                  walk(document);
                  return found;
                }"""
            )
            shot = page.screenshot(full_page=True)
        finally:
            browser.close()

    assert errors == [], f"the browser logged JavaScript errors: {errors}"
    assert [u for u in requests if not u.startswith("file:")] == []
    drawn = [c for c in canvases if c[0] > 100 and c[1] > 50]
    assert len(drawn) >= 4, (
        f"expected the price, oscillator, equity and drawdown canvases: {canvases}"
    )
    assert_not_blank(shot)


def assert_not_blank(png: bytes) -> None:
    """Many distinct colours over the page, not one background colour."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    colours = image.getcolors(maxcolors=1_000_000) or []
    assert len(colours) > 50, f"the screenshot is (nearly) blank: {len(colours)} colours"
    background = max(colours)[0] / (image.width * image.height)
    assert background < 0.9, f"{background:.0%} of the screenshot is one colour"
