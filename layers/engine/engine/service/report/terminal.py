"""The compact stats table a replay ends with on the terminal (two figures per line)."""

from __future__ import annotations

from typing import Any


def _pct(value: Any) -> str:
    return "n/a" if value is None else f"{value:+,.2f} %"


def _num(value: Any) -> str:
    return "n/a" if value is None else f"{value:,.2f}"


def stats_table(stats: dict[str, Any]) -> str:
    """A dozen lines: the figures a trader reads first; stats.json has them all."""
    opens = stats["open_positions"]
    rows = [
        ("Return", _pct(stats["return_pct"]), "Buy & hold", _pct(stats["buy_and_hold_return_pct"])),
        (
            "Return (ann.)",
            _pct(stats["return_ann_pct"]),
            "Volatility (ann.)",
            _pct(stats["volatility_ann_pct"]).lstrip("+"),
        ),
        ("Sharpe", _num(stats["sharpe_ratio"]), "Sortino", _num(stats["sortino_ratio"])),
        ("Max drawdown", _pct(stats["max_drawdown_pct"]), "Calmar", _num(stats["calmar_ratio"])),
        (
            "Max DD duration",
            stats["max_drawdown_duration"] or "n/a",
            "Exposure",
            _pct(stats["exposure_time_pct"]).lstrip("+"),
        ),
        (
            "Trades",
            f"{stats['trades']:,}",
            "Win rate",
            _pct(stats["win_rate_pct"]).lstrip("+"),
        ),
        (
            "Best trade",
            _pct(stats["best_trade_pct"]),
            "Worst trade",
            _pct(stats["worst_trade_pct"]),
        ),
        (
            "Avg trade",
            _pct(stats["avg_trade_pct"]),
            "Avg duration",
            stats["avg_trade_duration"] or "n/a",
        ),
        ("Profit factor", _num(stats["profit_factor"]), "SQN", _num(stats["sqn"])),
        ("Expectancy", _pct(stats["expectancy_pct"]), "Fees", _num(stats["fees"])),
        (
            "Equity",
            f"{_num(stats['capital'])} -> {_num(stats['equity_final'])}",
            "Open at end",
            f"{len(opens)} (unrealized {_num(stats['unrealized_pnl'])})",
        ),
        (
            "Cooldown trips",
            f"{stats['cooldown_trips']:,}",
            "Entries blocked",
            f"{stats['entries_blocked_by_cooldown']:,}",
        ),
    ]
    left = max(len(r[0]) for r in rows)
    lvalue = max(len(r[1]) for r in rows)
    right = max(len(r[2]) for r in rows)
    lines = [f"  {a:<{left}}  {b:>{lvalue}}    {c:<{right}}  {d}" for a, b, c, d in rows]
    reasons = ", ".join(
        f"{reason} {entry['trades']} ({entry['pnl']:+,.2f})"
        for reason, entry in stats["by_exit_reason"].items()
        if entry["trades"]
    )
    if reasons:
        lines.append(f"  {'Exits':<{left}}  {reasons}")
    return "\n".join(lines)
