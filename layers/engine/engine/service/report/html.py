"""report.html: one self-contained file that opens offline, drawn with TradingView's
Lightweight Charts (5.2.1, Apache 2.0; its 200 KB script is inlined from `assets/`).

Per asset, one chart of stacked panes on one time axis: candlesticks with the strategy's
price-scale indicators over them (TA-Lib's "Overlap Studies" group: SMA, EMA, BBANDS, SAR,
...), every other indicator (RSI, MACD, ATR, volume and pattern functions) in a pane of its
own below; an arrow at each entry (a long's up in blue, a short's down in purple, labelled),
one at each exit coloured by exit reason (pointing the way the closing order trades), and each
trade's stop and target drawn as dashed levels from its entry to its exit. Then the account:
equity and drawdown panes. Then the stats table and the trades list (click a heading to
sort). The mouse wheel zooms, dragging pans, every chart follows the others' time range,
and the price axis fits the bars in view.

Long histories: up to MAX_BARS bars every candle is drawn (a year of hourly bars is 8,760,
which the library handles without effort). Beyond that the candles are aggregated k bars at
a time (open of the first, high max, low min, close of the last; k = ceil(bars / MAX_BARS)),
indicators and equity take each group's last value and the drawdown its deepest, so the file
stays a few MB; markers and levels keep their exact prices at their group's time. The report
says when it did so.

Writing it is string work over the replay's arrays (no charting library in Python), so the
report costs little next to the replay it describes.
"""

from __future__ import annotations

import base64
import html
import math
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import talib.abstract
from pydantic_core import to_json

from engine.core.candles import FloatArray, IntArray
from engine.core.timeframes import to_ms
from engine.service.replay import ReplayResult
from engine.service.report.build import Report

MAX_BARS = 10_000
LIGHTWEIGHT_CHARTS = "lightweight-charts.standalone.production.js"  # 5.2.1
REASON_COLOURS = {
    "stop_loss": "#d62728",
    "take_profit": "#2ca02c",
    "signal": "#1f77b4",
    "time": "#ff7f0e",
}
REASON_LABELS = {"stop_loss": "SL", "take_profit": "TP", "signal": "signal", "time": "time"}
STOP_COLOUR, TARGET_COLOUR = "#e53935", "#2e7d32"
LONG_COLOUR, SHORT_COLOUR = "#1565c0", "#6a1b9a"  # entry arrows
PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")


def write_report_html(path: Path, result: ReplayResult, report: Report) -> None:
    path.write_text(render_report_html(result, report), encoding="utf-8")


def render_report_html(result: ReplayResult, report: Report) -> str:
    assert result.compiled is not None
    strategy = result.compiled.strategy
    stats = report.stats
    factor = max(1, math.ceil(len(report.curve.time) / MAX_BARS))
    charts = [_asset_chart(result, report, asset, factor) for asset in result.candles]
    curve = report.curve
    account = {
        "time": _seconds(_group(curve.time, factor, "first")),
        "equity": _values(_group(curve.equity, factor, "last")),
        "drawdown": _values(-_group(curve.drawdown, factor, "max") * 100),
        "capital": stats["capital"],
    }
    notes = [
        f"{strategy.name} ({strategy.strategy_id}), {', '.join(result.candles)} "
        f"{strategy.timeframe}: {stats['start']} .. {stats['end']}, {stats['bars']:,} bars, "
        f"capital {stats['capital']:,.2f}"
    ]
    if factor > 1:
        notes.append(
            f"{len(curve.time):,} bars: candles, indicators and equity are drawn {factor} bars "
            "at a time (each group's open, high, low and close); markers and levels are exact"
        )
    payload = {"charts": charts, "account": account}
    # pydantic's serializer: json's encoder took a fifth of the page for a long replay's
    # markers and levels (every number in them is finite: prices and bar times)
    data = to_json(payload).decode().replace("</", "<\\/")
    title = f"Replay report: {strategy.strategy_id}"
    return _PAGE.format(
        title=html.escape(title),
        notes="<br>".join(html.escape(n) for n in notes),
        stats=_stats_html(stats),
        trades=_trades_html(result),
        library=_library(),
        data=data,
        script=_SCRIPT,
        style=_STYLE,
    )


@cache
def _library() -> str:
    text = (resources.files("engine.service.report") / "assets" / LIGHTWEIGHT_CHARTS).read_text(
        "utf-8"
    )
    return text.replace("</script", "<\\/script")


# --- data ----------------------------------------------------------------------------------


def _group(values: np.ndarray[Any, Any], factor: int, how: str) -> np.ndarray[Any, Any]:
    """Aggregate consecutive groups of `factor` values (the last group may be shorter)."""
    if factor == 1 or len(values) == 0:
        return values
    starts = np.arange(0, len(values), factor)
    if how == "first":
        return np.asarray(values[starts])
    if how == "last":
        return np.asarray(values[np.minimum(starts + factor, len(values)) - 1])
    if how == "max":
        return np.asarray(np.maximum.reduceat(values, starts))
    return np.asarray(np.minimum.reduceat(values, starts))


def _seconds(times: IntArray) -> str:
    """Bar times as the chart takes them (UTC seconds), packed like `_values`."""
    return _values((np.asarray(times) // 1000).astype(np.float64))


def _values(values: FloatArray) -> str:
    """A series packed as base64 of little-endian float64 (NaN where undefined): exact, and
    an order of magnitude quicker to write than JSON numbers; the page unpacks it."""
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f8").tobytes()).decode("ascii")


def _asset_chart(result: ReplayResult, report: Report, asset: str, factor: int) -> dict[str, Any]:
    assert result.compiled is not None
    strategy = result.compiled.strategy
    history = result.candles[asset]
    window = slice(report.first_bar[asset], None)
    times = _group(history.time[window], factor, "first")
    overlays: list[dict[str, Any]] = []
    panes: dict[str, dict[str, Any]] = {}
    for key, values in report.indicators[asset].items():
        name = key.split(".")[0]
        ind = strategy.indicators[name]
        line = {"name": key, "values": _values(_group(values[window], factor, "last"))}
        if talib.abstract.Function(ind.fn).info["group"] == "Overlap Studies":
            line["colour"] = PALETTE[len(overlays) % len(PALETTE)]
            overlays.append(line)
        else:
            pane = panes.setdefault(
                name, {"title": f"{name}: {ind.fn} {_params(ind.params)}", "lines": []}
            )
            line["colour"] = PALETTE[len(pane["lines"]) % len(PALETTE)]
            pane["lines"].append(line)

    trades = [t for t in result.trades if t.asset == asset]
    entries = _bar_seconds(times, [to_ms(t.entry_time) for t in trades])
    exits = _bar_seconds(times, [to_ms(t.exit_time) for t in trades])
    markers: list[dict[str, Any]] = []
    spans: list[tuple[int, int, float | None, float | None]] = []
    for t, entry, exit_ in zip(trades, entries, exits, strict=True):
        markers.append(_entry_marker(entry, t.side, t.entry_price, ""))
        markers.append(
            _marker(
                exit_,
                "exit",
                t.exit_price,
                REASON_COLOURS.get(t.exit_reason, "#000000"),
                REASON_LABELS.get(t.exit_reason, t.exit_reason),
                up=t.side == "short",  # a short is closed by buying
            )
        )
        position = result.positions.get(t.position_id)
        if position is not None:
            spans.append((entry, exit_, position.stop_loss_price, position.take_profit_price))
    last = int(times[-1]) // 1000
    held = [p for p in result.open_positions if p.asset == asset]
    opened = _bar_seconds(times, [to_ms(p.entry_time) for p in held])
    for p, entry in zip(held, opened, strict=True):
        markers.append(_entry_marker(entry, p.side, p.entry_price, "open"))
        spans.append((entry, last, p.stop_loss_price, p.take_profit_price))
    markers.sort(key=lambda m: (m["time"], m["kind"] == "entry"))
    return {
        "asset": asset,
        "timeframe": strategy.timeframe,
        "time": _seconds(times),
        "open": _values(_group(history.open[window], factor, "first")),
        "high": _values(_group(history.high[window], factor, "max")),
        "low": _values(_group(history.low[window], factor, "min")),
        "close": _values(_group(history.close[window], factor, "last")),
        "overlays": overlays,
        "panes": list(panes.values()),
        "markers": markers,
        "levels": _level_slots(spans),
    }


def _bar_seconds(times: IntArray, moments_ms: list[int]) -> list[int]:
    """The (grouped) bar time each moment falls in, in seconds; all at once (a replay's
    thousands of markers, one search each, were a sixth of the page)."""
    k = np.searchsorted(times, np.asarray(moments_ms, dtype=np.int64), side="right") - 1
    return (times[np.maximum(k, 0)] // 1000).tolist()  # type: ignore[no-any-return]


def _params(params: Any) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in dict(params).items())


def _marker(
    time: int, kind: str, price: float, colour: str, text: str, *, up: bool
) -> dict[str, Any]:
    """An arrow at `price`: up (drawn below the price) for a buy, down (above it) for a sell."""
    return {"time": time, "kind": kind, "price": price, "colour": colour, "text": text, "up": up}


def _entry_marker(time: int, side: str, price: float, text: str) -> dict[str, Any]:
    """A long's entry is a blue arrow up; a short's a purple arrow down, labelled short."""
    if side == "short":
        label = "short" if not text else f"short, {text}"
        return _marker(time, "entry", price, SHORT_COLOUR, label, up=False)
    return _marker(time, "entry", price, LONG_COLOUR, text, up=True)


def _level_slots(
    spans: list[tuple[int, int, float | None, float | None]],
) -> list[dict[str, list[Any]]]:
    """Stop and target levels as line data, one slot per set of trades that do not overlap.

    A line series joins consecutive points (a point without value does not break it) and
    colours each segment as its first point: the entry point carries the level's colour, the
    exit point a transparent one, so nothing is drawn from one trade's exit to the next entry.
    """
    colours = {"stop": STOP_COLOUR, "target": TARGET_COLOUR}
    slots: list[dict[str, Any]] = []
    for entry, exit_, stop, target in sorted(spans):
        slot = next((s for s in slots if s["end"] < entry), None)
        if slot is None:
            slot = {"end": -1, "stop": [], "target": []}
            slots.append(slot)
        for key, level in (("stop", stop), ("target", target)):
            if level is None:
                slot[key] += [{"time": entry}, {"time": exit_}]
            else:
                slot[key] += [
                    {"time": entry, "value": level, "color": colours[key]},
                    {"time": exit_, "value": level, "color": "rgba(0,0,0,0)"},
                ]
        slot["end"] = exit_
    return [{"stop": s["stop"], "target": s["target"]} for s in slots]


# --- tables --------------------------------------------------------------------------------


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.4f}" if abs(value) < 1000 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return html.escape(str(value))


def _stats_html(stats: dict[str, Any]) -> str:
    simple = [(k, v) for k, v in stats.items() if not isinstance(v, dict | list)]
    half = (len(simple) + 1) // 2
    rows = []
    for i in range(half):
        cells = "".join(
            f"<th>{html.escape(k)}</th><td>{_fmt(v)}</td>" for k, v in simple[i::half][:2]
        )
        rows.append(f"<tr>{cells}</tr>")
    reasons = "".join(
        f"<tr><th><span class='dot' style='background:{REASON_COLOURS.get(r, '#000')}'></span>"
        f"{html.escape(r)}</th><td>{e['trades']:,}</td><td>{e['pnl']:,.2f}</td></tr>"
        for r, e in stats["by_exit_reason"].items()
    )
    assets = "".join(
        f"<tr><th>{html.escape(a)}</th><td>{e['trades']:,}</td><td>{e['pnl']:,.2f}</td>"
        f"<td>{_fmt(e['win_rate_pct'])}</td><td>{e['cooldown_trips']:,}</td>"
        f"<td>{e['entries_blocked_by_cooldown']:,}</td></tr>"
        for a, e in stats["by_asset"].items()
    )
    opens = "".join(
        f"<tr><th>{html.escape(p['asset'])}</th><td>{html.escape(p['side'])}</td>"
        f"<td>{html.escape(p['entry_time'])}</td>"
        f"<td>{p['entry_price']:,.4f}</td><td>{p['mark_price']:,.4f}</td>"
        f"<td>{p['unrealized_pnl']:,.2f}</td></tr>"
        for p in stats["open_positions"]
    )
    open_table = (
        "<table><tr><th>open at the end</th><th>side</th><th>entry</th><th>entry price</th>"
        "<th>mark</th>"
        f"<th>unrealized pnl</th></tr>{opens}</table>"
        if opens
        else ""
    )
    return (
        f"<div class='box'><table>{''.join(rows)}</table></div><div class='box'>"
        "<table><tr><th>exit reason</th><th>trades</th><th>pnl</th></tr>"
        f"{reasons}</table><table><tr><th>asset</th><th>trades</th><th>pnl</th>"
        "<th>win rate %</th><th>cooldown trips</th><th>entries blocked</th></tr>"
        f"{assets}</table>{open_table}</div>"
    )


def _trades_html(result: ReplayResult) -> str:
    head = (
        "<tr><th>#</th><th>asset</th><th>side</th><th>entry (UTC)</th><th>exit (UTC)</th>"
        "<th>entry price</th>"
        "<th>exit price</th><th>quantity</th><th>pnl</th><th>%</th><th>exit reason</th></tr>"
    )
    # cells that repeat (an asset, an exit reason) are escaped once; times are ISO strings cut
    # to the minute (strftime was a third of the table)
    assets = {a: html.escape(a) for a in {t.asset for t in result.trades}}
    reasons = {
        r: f"<span class='dot' style='background:{REASON_COLOURS.get(r, '#000')}'></span>"
        f"{html.escape(r)}"
        for r in {t.exit_reason for t in result.trades}
    }
    rows = []
    for k, t in enumerate(result.trades, 1):
        pct = t.pnl / (t.entry_price * t.quantity) * 100
        rows.append(
            f"<tr><td>{k}</td><td class='l'>{assets[t.asset]}</td>"
            f"<td class='l'>{t.side}</td>"
            f"<td class='l'>{t.entry_time.isoformat(' ', 'minutes')[:16]}</td>"
            f"<td class='l'>{t.exit_time.isoformat(' ', 'minutes')[:16]}</td>"
            f"<td data-v='{t.entry_price!r}'>{t.entry_price:,.4f}</td>"
            f"<td data-v='{t.exit_price!r}'>{t.exit_price:,.4f}</td>"
            f"<td data-v='{t.quantity!r}'>{t.quantity:,.6g}</td>"
            f"<td data-v='{t.pnl!r}' class='{'up' if t.pnl > 0 else 'down'}'>{t.pnl:,.2f}</td>"
            f"<td data-v='{pct!r}'>{pct:,.2f}</td>"
            f"<td class='l'>{reasons[t.exit_reason]}</td></tr>"
        )
    return f"<table id='trades'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


_STYLE = """
body{font:13px -apple-system,'Segoe UI',Roboto,sans-serif;margin:12px 18px;color:#222}
h1{font-size:20px;margin:4px 0}h2{font-size:16px;margin:18px 0 6px}
.note{color:#555;margin:0 0 8px}.legend{font-size:12px;margin:6px 0 2px;color:#333}
.legend span{margin-right:12px;white-space:nowrap}.chart{width:100%;position:relative}
table{border-collapse:collapse;margin:4px 24px 12px 0}
th{text-align:left;padding:2px 10px;color:#444;font-weight:600}
td{text-align:right;padding:2px 10px;font-variant-numeric:tabular-nums}
td.l{text-align:left}tr:nth-child(even){background:#f4f6f8}.box{display:inline-block;
vertical-align:top}.dot{display:inline-block;width:9px;height:9px;border-radius:50%;
margin-right:5px}.up{color:#138a72}.down{color:#c62828}#trades th{cursor:pointer}
.scroll{max-height:480px;overflow:auto;display:inline-block}
"""

_SCRIPT = """
(function () {
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const LC = LightweightCharts;
  const unpack = (text) => {  // base64 of little-endian float64 values
    const bin = atob(text);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return new Float64Array(bytes.buffer);
  };
  const charts = [];
  const base = {
    autoSize: true,
    layout: {background: {color: '#ffffff'}, textColor: '#333', fontSize: 11,
             panes: {separatorColor: '#d0d4da'}},
    grid: {vertLines: {color: '#f0f2f5'}, horzLines: {color: '#f0f2f5'}},
    timeScale: {timeVisible: true, secondsVisible: false, rightOffset: 3},
    rightPriceScale: {borderColor: '#d0d4da'},
    crosshair: {mode: LC.CrosshairMode.Normal},
  };
  const points = (time, values) => {
    const out = [];
    for (let i = 0; i < time.length; i++) {
      out.push(Number.isNaN(values[i]) ? {time: time[i]} : {time: time[i], value: values[i]});
    }
    return out;
  };
  const quiet = {lastValueVisible: false, priceLineVisible: false};
  const legendItem = (legend, name, colour) => {
    const span = document.createElement('span');
    span.innerHTML = '<b style="color:' + colour + '">&#9632;</b> ' + name;
    legend.appendChild(span);
    return span;
  };

  function assetChart(spec) {
    const box = document.getElementById('chart-' + spec.asset);
    const legend = box.previousElementSibling;
    const chart = LC.createChart(box, base);
    const candles = chart.addSeries(LC.CandlestickSeries, {
      upColor: '#26a69a', downColor: '#ef5350', borderVisible: false,
      wickUpColor: '#26a69a', wickDownColor: '#ef5350', priceLineVisible: false});
    const time = unpack(spec.time), open = unpack(spec.open), high = unpack(spec.high);
    const low = unpack(spec.low), close = unpack(spec.close);
    const bars = [];
    for (let i = 0; i < time.length; i++) {
      bars.push({time: time[i], open: open[i], high: high[i], low: low[i], close: close[i]});
    }
    candles.setData(bars);
    const ohlc = legendItem(legend, spec.asset + ' ' + spec.timeframe, '#26a69a');
    for (const line of spec.overlays) {
      const s = chart.addSeries(LC.LineSeries, Object.assign(
        {color: line.colour, lineWidth: 1.5, crosshairMarkerVisible: false}, quiet));
      s.setData(points(time, unpack(line.values)));
      legendItem(legend, line.name, line.colour);
    }
    for (const slot of spec.levels) {
      for (const [key, colour] of [['stop', '#e53935'], ['target', '#2e7d32']]) {
        const s = chart.addSeries(LC.LineSeries, Object.assign({color: colour, lineWidth: 1,
          lineStyle: LC.LineStyle.Dashed, crosshairMarkerVisible: false}, quiet));
        s.setData(slot[key]);
      }
    }
    if (spec.levels.length) {
      legendItem(legend, 'stop', '#e53935');
      legendItem(legend, 'target', '#2e7d32');
    }
    for (const [up, label] of [[true, 'long entry'], [false, 'short entry']]) {
      const first = spec.markers.find((m) => m.kind === 'entry' && m.up === up);
      if (first) legendItem(legend, label, first.colour);
    }
    LC.createSeriesMarkers(candles, spec.markers.map((m) => ({time: m.time, price: m.price,
      position: m.up ? 'atPriceBottom' : 'atPriceTop', shape: m.up ? 'arrowUp' : 'arrowDown',
      color: m.colour, text: m.text})));
    spec.panes.forEach((pane, k) => {
      for (const line of pane.lines) {
        const s = chart.addSeries(LC.LineSeries, Object.assign(
          {color: line.colour, lineWidth: 1.2, title: line.name}, quiet), k + 1);
        s.setData(points(time, unpack(line.values)));
      }
    });
    const panes = chart.panes();
    panes[0].setStretchFactor(3);
    for (let k = 1; k < panes.length; k++) panes[k].setStretchFactor(1);
    chart.subscribeCrosshairMove((param) => {
      const bar = param.seriesData ? param.seriesData.get(candles) : undefined;
      ohlc.innerHTML = '<b style="color:#26a69a">&#9632;</b> ' + spec.asset + ' ' +
        spec.timeframe + (bar ? '  O ' + bar.open + '  H ' + bar.high + '  L ' + bar.low +
        '  C ' + bar.close : '');
    });
    return chart;
  }

  function accountChart(spec) {
    const box = document.getElementById('chart-account');
    const chart = LC.createChart(box, base);
    const equity = chart.addSeries(LC.LineSeries, Object.assign(
      {color: '#1f77b4', lineWidth: 1.5, title: 'equity'}, quiet));
    const time = unpack(spec.time);
    equity.setData(points(time, unpack(spec.equity)));
    equity.createPriceLine({price: spec.capital, color: '#888', lineWidth: 1,
      lineStyle: LC.LineStyle.Dotted, axisLabelVisible: true, title: 'capital'});
    const drawdown = chart.addSeries(LC.BaselineSeries, Object.assign({
      baseValue: {type: 'price', price: 0}, topLineColor: 'rgba(0,0,0,0)',
      topFillColor1: 'rgba(0,0,0,0)', topFillColor2: 'rgba(0,0,0,0)',
      bottomLineColor: '#ef5350', bottomFillColor1: 'rgba(239,83,80,0.35)',
      bottomFillColor2: 'rgba(239,83,80,0.35)', lineWidth: 1, title: 'drawdown %'}, quiet), 1);
    drawdown.setData(points(time, unpack(spec.drawdown)));
    const panes = chart.panes();
    panes[0].setStretchFactor(2);
    panes[1].setStretchFactor(1);
    return chart;
  }

  for (const spec of data.charts) charts.push(assetChart(spec));
  charts.push(accountChart(data.account));
  // every chart follows the time range of the one being zoomed or panned
  let syncing = false;
  for (const source of charts) {
    source.timeScale().subscribeVisibleTimeRangeChange((range) => {
      if (syncing || range === null) return;
      syncing = true;
      for (const other of charts) {
        if (other !== source) {
          try { other.timeScale().setVisibleRange(range); } catch (e) { /* no data there */ }
        }
      }
      syncing = false;
    });
  }
  for (const chart of charts) chart.timeScale().fitContent();
  // then the account's whole span (every asset's bars), which the others follow
  setTimeout(() => charts[charts.length - 1].timeScale().fitContent(), 0);

  // the trades list sorts by the clicked column
  const table = document.getElementById('trades');
  table.querySelectorAll('th').forEach((th, column) => {
    let ascending = true;
    th.addEventListener('click', () => {
      const body = table.tBodies[0];
      const rows = Array.from(body.rows);
      const key = (row) => {
        const cell = row.cells[column];
        const v = cell.dataset.v !== undefined ? cell.dataset.v : cell.textContent;
        const n = Number(v);
        return Number.isNaN(n) ? v : n;
      };
      rows.sort((a, b) => (key(a) > key(b) ? 1 : key(a) < key(b) ? -1 : 0) * (ascending ? 1 : -1));
      ascending = !ascending;
      rows.forEach((row) => body.appendChild(row));
    });
  });
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{style}</style>
<script>{library}</script>
</head>
<body>
<h1>{title}</h1>
<p class="note">{notes}</p>
<div id="charts"></div>
<h2>Account</h2>
<div class="legend"><span><b style="color:#1f77b4">&#9632;</b> equity (marked to market at
each close)</span><span><b style="color:#ef5350">&#9632;</b> drawdown %</span></div>
<div class="chart" id="chart-account" style="height:300px"></div>
<h2>Statistics</h2>
{stats}
<h2>Trades</h2>
<div class="scroll">{trades}</div>
<script type="application/json" id="report-data">{data}</script>
<script>
(function () {{
  const data = JSON.parse(document.getElementById('report-data').textContent);
  const holder = document.getElementById('charts');
  for (const spec of data.charts) {{
    const legend = document.createElement('div');
    legend.className = 'legend';
    const box = document.createElement('div');
    box.className = 'chart';
    box.id = 'chart-' + spec.asset;
    box.style.height = (430 + 130 * spec.panes.length) + 'px';
    holder.appendChild(legend);
    holder.appendChild(box);
  }}
}})();
</script>
<script>{script}</script>
</body>
</html>
"""
