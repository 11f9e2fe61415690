"""report.html: one self-contained file (bokeh, its JavaScript inlined) that opens offline.

Per asset: candlesticks with the strategy's price-scale indicators (TA-Lib's "Overlap Studies"
group: SMA, EMA, BBANDS, SAR, ...) drawn over them, every other indicator (RSI, MACD, ATR,
volume and pattern functions) in its own pane below; entry markers, exit markers coloured by
exit reason, and each trade's stop and target as levels from its entry to its exit. Below:
equity and drawdown, the stats table and the sortable trades list. All x-axes are linked;
the mouse wheel zooms time and the price axis follows the visible bars.

Long histories: up to MAX_BARS bars every candle is drawn (a year of hourly bars is 8,760).
Beyond that the candles are aggregated k bars at a time (open of the first, high max, low
min, close of the last; k = ceil(bars / MAX_BARS)), the indicators and equity take each
group's last value and the drawdown its deepest, so the file stays a few MB and the browser
responsive; markers and levels keep their exact times and prices. The report says when it
did so.

An adapter: imported only when a report is rendered, and bokeh is never in the Lambda layer.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any, Final

import numpy as np
import talib.abstract
from bokeh.embed import file_html
from bokeh.layouts import column, gridplot
from bokeh.models import (
    ColumnDataSource,
    CustomJS,
    DatetimeTickFormatter,
    HoverTool,
    Range1d,
    TabPanel,
    Tabs,
)
from bokeh.models.annotations import Span
from bokeh.models.widgets import DataTable, Div, NumberFormatter, TableColumn
from bokeh.plotting import figure
from bokeh.resources import INLINE

from engine.core.candles import Candles, FloatArray
from engine.core.timeframes import timeframe_ms, to_ms
from engine.replay import ReplayResult
from engine.report.service import Report

MAX_BARS = 10_000
REASON_COLOURS = {
    "stop_loss": "#d62728",
    "take_profit": "#2ca02c",
    "signal": "#1f77b4",
    "time": "#ff7f0e",
    "open": "#7f7f7f",
}
UP, DOWN = "#26a69a", "#ef5350"
PALETTE = ("#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
TOOLS = "xpan,xwheel_zoom,box_zoom,reset,save"
WIDTH_MODE: Final = "stretch_width"


def write_report_html(path: Path, result: ReplayResult, report: Report) -> None:
    path.write_text(render_report_html(result, report), encoding="utf-8")


def render_report_html(result: ReplayResult, report: Report) -> str:
    assert result.compiled is not None
    strategy = result.compiled.strategy
    step = timeframe_ms(strategy.timeframe)
    times = report.curve.time
    factor = max(1, math.ceil(len(times) / MAX_BARS))
    x_range = Range1d(start=float(times[0]) - step, end=float(times[-1]) + step * factor)

    panels = []
    for asset, history in result.candles.items():
        panels.append((asset, _asset_charts(result, report, asset, history, x_range, factor)))
    equity, drawdown = _account_charts(report, x_range, factor)
    charts: Any = (
        _grid([*panels[0][1], equity, drawdown])
        if len(panels) == 1
        else column(
            Tabs(
                tabs=[TabPanel(child=_grid(figs), title=asset) for asset, figs in panels],
                sizing_mode=WIDTH_MODE,
            ),
            _grid([equity, drawdown]),
            sizing_mode=WIDTH_MODE,
        )
    )
    stats = report.stats
    notes = [
        f"{html.escape(strategy.name)} ({html.escape(strategy.strategy_id)}), "
        f"{html.escape(', '.join(result.candles))} {strategy.timeframe}: "
        f"{stats['start']} .. {stats['end']}, {stats['bars']:,} bars, "
        f"capital {stats['capital']:,.2f}"
    ]
    if factor > 1:
        notes.append(
            f"{len(times):,} bars: candles, indicators and equity are drawn {factor} bars "
            "at a time (each group's open, high, low and close); markers and levels are exact"
        )
    header = Div(
        text=f"<h2 style='margin:4px 0'>Replay report</h2><p>{'<br>'.join(notes)}</p>",
        sizing_mode=WIDTH_MODE,
    )
    layout = column(
        header,
        charts,
        Div(text=_stats_html(stats), sizing_mode=WIDTH_MODE),
        Div(text="<h3>Trades</h3>"),
        _trades_table(result, report),
        sizing_mode=WIDTH_MODE,
    )
    return file_html(layout, resources=INLINE, title=f"Replay report: {strategy.strategy_id}")


# --- charts --------------------------------------------------------------------------------


def _grid(figs: list[Any]) -> Any:
    """Figures stacked with one shared toolbar."""
    return gridplot(
        children=[[f] for f in figs],
        merge_tools=True,
        toolbar_location="right",
        sizing_mode=WIDTH_MODE,
    )


def _figure(height: int, x_range: Range1d, title: str | None = None) -> Any:
    fig = figure(
        height=height,
        x_axis_type="datetime",
        x_range=x_range,
        tools=TOOLS,
        active_scroll="xwheel_zoom",
        active_drag="xpan",
        sizing_mode=WIDTH_MODE,
        title=title,
        output_backend="canvas",
    )
    fig.xaxis.formatter = DatetimeTickFormatter(
        hours="%d %b %H:%M", days="%d %b", months="%b %Y", years="%Y"
    )
    fig.min_border_left = 60
    return fig


def _group(values: np.ndarray[Any, Any], factor: int, how: str) -> np.ndarray[Any, Any]:
    """Aggregate consecutive groups of `factor` values (the last group may be shorter)."""
    if factor == 1:
        return values
    starts = np.arange(0, len(values), factor)
    if how == "first":
        return np.asarray(values[starts])
    if how == "last":
        return np.asarray(values[np.minimum(starts + factor, len(values)) - 1])
    if how == "max":
        return np.asarray(np.maximum.reduceat(values, starts))
    return np.asarray(np.minimum.reduceat(values, starts))


def _asset_charts(
    result: ReplayResult,
    report: Report,
    asset: str,
    history: Candles,
    x_range: Range1d,
    factor: int,
) -> list[Any]:
    assert result.compiled is not None
    strategy = result.compiled.strategy
    step = timeframe_ms(strategy.timeframe)
    first = report.first_bar[asset]
    window = slice(first, None)
    time = _group(history.time[window], factor, "first").astype(np.float64)
    open_ = _group(history.open[window], factor, "first")
    high = _group(history.high[window], factor, "max")
    low = _group(history.low[window], factor, "min")
    close = _group(history.close[window], factor, "last")
    rising = close >= open_
    candles = ColumnDataSource(
        {
            "time": time,
            "open": open_,
            "high": high,
            "low": low,
            "close": close,
            "top": np.maximum(open_, close),
            "bottom": np.minimum(open_, close),
            "colour": np.where(rising, UP, DOWN),
        }
    )
    price = _figure(420, x_range, title=f"{asset} {strategy.timeframe}")
    price.segment("time", "high", "time", "low", source=candles, color="colour")
    bars = price.vbar(
        "time",
        step * factor * 0.7,
        "top",
        "bottom",
        source=candles,
        fill_color="colour",
        line_color="colour",
    )
    price.add_tools(
        HoverTool(
            renderers=[bars],
            tooltips=[
                ("time", "@time{%F %H:%M}"),
                ("open", "@open{0,0.[0000]}"),
                ("high", "@high{0,0.[0000]}"),
                ("low", "@low{0,0.[0000]}"),
                ("close", "@close{0,0.[0000]}"),
            ],
            formatters={"@time": "datetime"},
        )
    )
    price.y_range = Range1d(start=float(np.nanmin(low)), end=float(np.nanmax(high)))

    panes: dict[str, list[tuple[str, FloatArray]]] = {}
    colour = 0
    for key, values in report.indicators[asset].items():
        name = key.split(".")[0]
        ind = strategy.indicators[name]
        series = _group(values[window], factor, "last")
        group = talib.abstract.Function(ind.fn).info["group"]
        if group == "Overlap Studies":
            price.line(
                time,
                series,
                color=PALETTE[colour % len(PALETTE)],
                line_width=1.4,
                legend_label=key,
            )
            colour += 1
        else:
            panes.setdefault(name, []).append((key, series))

    _trade_marks(price, result, asset)
    if price.legend:
        price.legend.location = "top_left"
        price.legend.click_policy = "hide"
        price.legend.background_fill_alpha = 0.6
        price.legend.label_text_font_size = "9pt"
    _follow_visible_prices(price, candles)

    figs = [price]
    for name, lines in panes.items():
        ind = strategy.indicators[name]
        pane = _figure(130, x_range, title=f"{name}: {ind.fn} {dict(ind.params) or ''}".strip())
        for k, (key, series) in enumerate(lines):
            pane.line(time, series, color=PALETTE[k % len(PALETTE)], legend_label=key)
        pane.legend.location = "top_left"
        pane.legend.orientation = "horizontal"
        pane.legend.label_text_font_size = "8pt"
        pane.legend.padding = 2
        pane.legend.background_fill_alpha = 0.6
        figs.append(pane)
    return figs


def _trade_marks(price: Any, result: ReplayResult, asset: str) -> None:
    """Entries, exits by reason, each trade's stop and target from its entry to its exit."""
    trades = [t for t in result.trades if t.asset == asset]
    opens = [p for p in result.open_positions if p.asset == asset]
    history = result.candles[asset]
    last = float(history.time[-1])
    entry_rows: dict[str, list[Any]] = {"time": [], "price": [], "quantity": []}
    exit_rows: dict[str, list[Any]] = {
        "time": [],
        "price": [],
        "reason": [],
        "pnl": [],
        "colour": [],
    }
    levels: dict[str, list[Any]] = {"x0": [], "x1": [], "y": [], "colour": [], "kind": []}
    links: dict[str, list[Any]] = {"x0": [], "x1": [], "y0": [], "y1": [], "colour": []}
    spans: list[tuple[str, float, float, float, float, str]] = []
    for t in trades:
        position = result.positions.get(t.position_id)
        spans.append(
            (
                t.position_id,
                float(to_ms(t.entry_time)),
                t.entry_price,
                float(to_ms(t.exit_time)),
                t.exit_price,
                t.exit_reason,
            )
        )
        exit_rows["time"].append(float(to_ms(t.exit_time)))
        exit_rows["price"].append(t.exit_price)
        exit_rows["reason"].append(t.exit_reason)
        exit_rows["pnl"].append(t.pnl)
        exit_rows["colour"].append(REASON_COLOURS.get(t.exit_reason, "#000000"))
        links["x0"].append(float(to_ms(t.entry_time)))
        links["x1"].append(float(to_ms(t.exit_time)))
        links["y0"].append(t.entry_price)
        links["y1"].append(t.exit_price)
        links["colour"].append(UP if t.pnl > 0 else DOWN)
        if position is not None:
            _levels(levels, position.stop_loss_price, position.take_profit_price, spans[-1])
    for p in opens:
        span = (p.position_id, float(to_ms(p.entry_time)), p.entry_price, last, p.entry_price, "")
        spans.append(span)
        _levels(levels, p.stop_loss_price, p.take_profit_price, span)
    for _, entry_ms, entry_price, *_rest in spans:
        entry_rows["time"].append(entry_ms)
        entry_rows["price"].append(entry_price)
    entry_rows["quantity"] = [
        *(t.quantity for t in trades),
        *(p.quantity for p in opens),
    ]

    price.segment(
        "x0", "y", "x1", "y", source=ColumnDataSource(levels), color="colour",
        line_dash="dashed", line_width=1.2, legend_label="stop / target",
    )  # fmt: skip
    price.segment(
        "x0", "y0", "x1", "y1", source=ColumnDataSource(links), color="colour",
        line_dash="dotted", line_width=1.5,
    )  # fmt: skip
    entries = price.scatter(
        "time", "price", source=ColumnDataSource(entry_rows), marker="triangle", size=11,
        fill_color="#1565c0", line_color="white", legend_label="entry",
    )  # fmt: skip
    exits = price.scatter(
        "time", "price", source=ColumnDataSource(exit_rows), marker="inverted_triangle",
        size=11, fill_color="colour", line_color="white", legend_field="reason",
    )  # fmt: skip
    price.add_tools(
        HoverTool(
            renderers=[entries],
            tooltips=[("entry", "@time{%F %H:%M}"), ("price", "@price"), ("qty", "@quantity")],
            formatters={"@time": "datetime"},
        ),
        HoverTool(
            renderers=[exits],
            tooltips=[
                ("exit", "@time{%F %H:%M}"),
                ("reason", "@reason"),
                ("price", "@price"),
                ("pnl", "@pnl{0,0.00}"),
            ],
            formatters={"@time": "datetime"},
        ),
    )


def _levels(
    levels: dict[str, list[Any]],
    stop: float | None,
    target: float | None,
    span: tuple[str, float, float, float, float, str],
) -> None:
    _, entry_ms, _, exit_ms, _, _ = span
    for level, colour, kind in ((stop, DOWN, "stop"), (target, UP, "target")):
        if level is None:
            continue
        levels["x0"].append(entry_ms)
        levels["x1"].append(exit_ms)
        levels["y"].append(level)
        levels["colour"].append(colour)
        levels["kind"].append(kind)


def _follow_visible_prices(price: Any, candles: ColumnDataSource) -> None:
    """Fit the price axis to the bars in view whenever the time axis moves."""
    price.x_range.js_on_change(
        "end",
        CustomJS(
            args={"source": candles, "y": price.y_range},
            code="""
const t = source.data.time, lo = source.data.low, hi = source.data.high;
const x0 = cb_obj.start, x1 = cb_obj.end;
let min = Infinity, max = -Infinity;
for (let i = 0; i < t.length; i++) {
  if (t[i] < x0 || t[i] > x1) continue;
  if (lo[i] < min) min = lo[i];
  if (hi[i] > max) max = hi[i];
}
if (isFinite(min) && isFinite(max) && max > min) {
  const pad = (max - min) * 0.05;
  y.start = min - pad;
  y.end = max + pad;
}
""",
        ),
    )


def _account_charts(report: Report, x_range: Range1d, factor: int) -> tuple[Any, Any]:
    curve = report.curve
    time = _group(curve.time, factor, "first").astype(np.float64)
    equity = _group(curve.equity, factor, "last")
    drawdown = -_group(curve.drawdown, factor, "max") * 100
    capital = float(report.stats["capital"])
    eq = _figure(170, x_range, title="Equity (marked to market at each close)")
    eq.line(time, equity, color="#1f77b4", line_width=1.5)
    eq.add_layout(Span(location=capital, dimension="width", line_dash="dashed", line_alpha=0.5))
    eq.y_range = Range1d(
        start=float(min(equity.min(), capital)) * 0.999,
        end=float(max(equity.max(), capital)) * 1.001,
    )
    dd = _figure(120, x_range, title="Drawdown %")
    dd.varea(x=time, y1=drawdown, y2=np.zeros_like(drawdown), fill_color=DOWN, fill_alpha=0.4)
    low = float(drawdown.min()) if len(drawdown) else 0.0
    dd.y_range = Range1d(start=min(low * 1.1, -0.01), end=0.0)
    return eq, dd


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
        cells = []
        for k, v in simple[i::half][:2]:
            cells.append(f"<th>{html.escape(k)}</th><td>{_fmt(v)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    reasons = "".join(
        f"<tr><th>{html.escape(r)}</th><td>{e['trades']:,}</td><td>{e['pnl']:,.2f}</td></tr>"
        for r, e in stats["by_exit_reason"].items()
    )
    assets = "".join(
        f"<tr><th>{html.escape(a)}</th><td>{e['trades']:,}</td><td>{e['pnl']:,.2f}</td>"
        f"<td>{_fmt(e['win_rate_pct'])}</td><td>{e['cooldown_trips']:,}</td>"
        f"<td>{e['entries_blocked_by_cooldown']:,}</td></tr>"
        for a, e in stats["by_asset"].items()
    )
    opens = "".join(
        f"<tr><th>{html.escape(p['asset'])}</th><td>{html.escape(p['entry_time'])}</td>"
        f"<td>{p['entry_price']:,.4f}</td><td>{p['mark_price']:,.4f}</td>"
        f"<td>{p['unrealized_pnl']:,.2f}</td></tr>"
        for p in stats["open_positions"]
    )
    style = (
        "<style>.rs table{border-collapse:collapse;margin:6px 24px 12px 0;font:13px sans-serif}"
        ".rs th{text-align:left;padding:2px 10px;color:#444;font-weight:600}"
        ".rs td{text-align:right;padding:2px 10px;font-variant-numeric:tabular-nums}"
        ".rs tr:nth-child(even){background:#f4f6f8}.rs .box{display:inline-block;"
        "vertical-align:top}</style>"
    )
    return (
        f"{style}<div class='rs'><h3>Statistics</h3><div class='box'><table>{''.join(rows)}"
        "</table></div><div class='box'><table><tr><th>exit reason</th><th>trades</th>"
        f"<th>pnl</th></tr>{reasons}</table><table><tr><th>asset</th><th>trades</th>"
        "<th>pnl</th><th>win rate %</th><th>cooldown trips</th><th>entries blocked</th></tr>"
        f"{assets}</table>"
        + (
            "<table><tr><th>open at the end</th><th>entry</th><th>entry price</th>"
            f"<th>mark</th><th>unrealized pnl</th></tr>{opens}</table>"
            if opens
            else ""
        )
        + "</div></div>"
    )


def _trades_table(result: ReplayResult, report: Report) -> DataTable:
    trades = result.trades
    data = {
        "asset": [t.asset for t in trades],
        "entry_time": [t.entry_time.strftime("%Y-%m-%d %H:%M") for t in trades],
        "exit_time": [t.exit_time.strftime("%Y-%m-%d %H:%M") for t in trades],
        "entry_price": [t.entry_price for t in trades],
        "exit_price": [t.exit_price for t in trades],
        "quantity": [t.quantity for t in trades],
        "pnl": [t.pnl for t in trades],
        "return_pct": [t.pnl / (t.entry_price * t.quantity) * 100 for t in trades],
        "exit_reason": [t.exit_reason for t in trades],
    }
    number = NumberFormatter(format="0,0.[0000]")
    columns = [
        TableColumn(field="asset", title="asset"),
        TableColumn(field="entry_time", title="entry (UTC)"),
        TableColumn(field="exit_time", title="exit (UTC)"),
        TableColumn(field="entry_price", title="entry price", formatter=number),
        TableColumn(field="exit_price", title="exit price", formatter=number),
        TableColumn(field="quantity", title="quantity", formatter=number),
        TableColumn(field="pnl", title="pnl", formatter=NumberFormatter(format="0,0.00")),
        TableColumn(field="return_pct", title="%", formatter=NumberFormatter(format="0.00")),
        TableColumn(field="exit_reason", title="exit reason"),
    ]
    return DataTable(
        source=ColumnDataSource(data),
        columns=columns,
        height=min(400, 28 + 25 * max(len(trades), 1)),
        sizing_mode=WIDTH_MODE,
        index_position=None,
    )
