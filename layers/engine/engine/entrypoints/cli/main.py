"""`python -m engine`: the engine's command line (DESIGN §9).

Every subcommand is one registrar, `add_<name>_command(subparsers)`, which adds its parser
and sets `handler` to a function `(args) -> exit code`. `build_parser` calls every registrar
that `registrars()` lists. Commands import only `base` (their error and helpers), never this
module, and bring their heavier dependencies (storage, the report) inside their handlers.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from engine.entrypoints.cli.base import (
    EXIT_OK,
    CommandError,
    Handler,
    Registrar,
    Subparsers,
    load_strategy_file,
    write_json_lines,
)
from engine.entrypoints.cli.commands import add_store_commands
from engine.entrypoints.cli.events import add_events_commands

if TYPE_CHECKING:
    from engine.core.candles import Candles
    from engine.core.strategy import Strategy

__all__ = ["CommandError", "build_parser", "main"]

# --- the parser -----------------------------------------------------------------------------


def registrars() -> list[Registrar]:
    """Every subcommand's registrar, in the order `--help` lists them.

    To add a command, write `add_<name>_command(subparsers)` (in its own module when it
    brings its own dependencies, e.g. storage) and append it here.
    """
    return [add_store_commands, add_replay_command, add_events_commands]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m engine",
        description="Execution engine command line: strategies, candles, evaluation, replay.",
    )
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True
    )
    for register in registrars():
        register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except CommandError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # one line, never a traceback; ENGINE_DEBUG=1 shows it
        if os.environ.get("ENGINE_DEBUG"):
            raise
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


# --- replay ---------------------------------------------------------------------------------


def add_replay_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="run a strategy bar by bar over history, from an empty state, and report on it",
        description=(
            "Evaluate a strategy at every bar of its candles, exactly as the live engine "
            "would, starting from an empty execution state and one account of --capital. "
            "Writes DIR/trades.json (closed trades), DIR/orders.json (every order in its "
            "final status), DIR/stats.json (the figures of docs/report.md), DIR/equity.csv "
            "(equity at every bar's close) and DIR/report.html (charts, stats and trades; "
            "one file that opens offline)."
        ),
    )
    parser.add_argument("--strategy", required=True, metavar="FILE.json", help="strategy JSON")
    parser.add_argument(
        "--candles",
        required=True,
        metavar="FILE|DIR",
        help="candles of the strategy's timeframe: a .csv (time,open,high,low,close,volume) "
        "or .parquet file of one asset, or a directory of {ASSET}_{TF}.csv|.parquet files "
        "(ASSET with / as _, e.g. BTC_USDT_1h.csv) holding every asset of the strategy",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--asset", help="the asset to replay (required with a file when the strategy has several)"
    )
    parser.add_argument(
        "--capital",
        type=float,
        default=10_000.0,
        metavar="C",
        help="starting equity of the account, in the quote currency (default 10,000)",
    )
    parser.add_argument(
        "--from",
        dest="start",
        metavar="TIME",
        help="first bar to replay (its open time, ISO 8601 date or time, UTC when naive); "
        "earlier bars still warm the indicators up",
    )
    parser.add_argument(
        "--to",
        dest="end",
        metavar="TIME",
        help="last bar to replay (a date alone means up to the end of that day)",
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="never show a progress bar (otherwise shown on stderr for long runs)",
    )
    parser.set_defaults(handler=run_replay)


def parse_time_bound(text: str, option: str, end_of_day: bool = False) -> int:
    """An ISO 8601 date or date-time (naive = UTC) as epoch ms; a date alone is its midnight,
    or with `end_of_day` its last millisecond."""
    from datetime import UTC, datetime, timedelta

    raw = text.strip()
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise CommandError(
            f"{option} {text!r}: not an ISO 8601 date or time (e.g. 2024-03-01 or "
            "2024-03-01T12:00:00Z)"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    if end_of_day and len(raw) == 10:  # YYYY-MM-DD: the whole day
        value += timedelta(days=1, milliseconds=-1)
    return int(value.timestamp() * 1000)


def run_replay(args: argparse.Namespace) -> int:
    from engine.adapters.candle_files import CandlesFileError
    from engine.service.replay import pick_asset, replay
    from engine.service.report.build import build_report, write_equity_csv, write_stats
    from engine.service.report.terminal import stats_table

    strategy = load_strategy_file(args.strategy)
    if not math.isfinite(args.capital) or args.capital <= 0:
        raise CommandError(f"--capital must be a positive amount, not {args.capital:g}")
    start = parse_time_bound(args.start, "--from") if args.start else None
    end = parse_time_bound(args.end, "--to", end_of_day=True) if args.end else None
    if start is not None and end is not None and start > end:
        raise CommandError(f"--from {args.start} is after --to {args.end}")
    source = Path(args.candles)
    try:
        asset = pick_asset(strategy, args.asset) if args.asset or not source.is_dir() else None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        candles = _read_replay_candles(source, strategy, asset)
    except CandlesFileError as exc:
        raise CommandError(str(exc)) from None
    try:
        result = replay(
            strategy,
            candles,
            asset=asset,
            progress=args.progress,
            start_ms=start,
            end_ms=end,
        )
        report = build_report(result, capital=args.capital)
    except ValueError as exc:
        raise CommandError(f"{args.candles}: {exc}") from None

    from engine.service.report.html import write_report_html

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json_lines(out / "trades.json", result.trade_lines())
        write_json_lines(out / "orders.json", result.order_lines())
        write_stats(out / "stats.json", report.stats)
        write_equity_csv(out / "equity.csv", report.curve)
        write_report_html(out / "report.html", result, report)
    except OSError as exc:
        raise CommandError(f"{out}: cannot write: {exc.strerror or exc}") from None

    # each warning once per replay, with how many evaluations raised it
    shown: set[str] = set()
    for warning in result.warnings:
        if warning.code == "undefined_value" or warning.code in shown:
            continue  # undefined_value: warm-up, expected on the first bars of every replay
        shown.add(warning.code)
        count = result.warning_counts.get(warning.code, 1)
        times = f" ({count:,} times in this replay)" if count > 1 else ""
        print(f"warning: [{warning.code}] {warning.message}{times}", file=sys.stderr)
    stats = report.stats
    print(
        f"replay {result.strategy_id} {result.asset} {result.timeframe}: "
        f"{stats['start']} .. {stats['end']}, {result.bars:,} bars, {len(result.trades):,} "
        f"trades, pnl {result.total_pnl:,.2f}, {len(result.open_positions)} open at the end "
        f"-> {out}"
    )
    print(stats_table(stats))
    return EXIT_OK


def _read_replay_candles(
    source: Path, strategy: Strategy, asset: str | None
) -> Candles | dict[str, Candles]:
    """One file (the chosen asset), or a directory: the chosen asset, else every asset."""
    from engine.adapters.candle_files import read_candles_file
    from engine.adapters.marketdata.files import FileProvider, candles_file_stem

    if not source.is_dir():
        return read_candles_file(source, strategy.timeframe)
    provider = FileProvider(source)
    found: dict[str, Candles] = {}
    missing = []
    for name in [asset] if asset is not None else strategy.assets:
        path = provider.path_for(name, strategy.timeframe)
        if path is None:
            missing.append(f"{candles_file_stem(name, strategy.timeframe)}.csv|.parquet")
        else:
            found[name] = read_candles_file(path, strategy.timeframe)
    if missing:
        raise CommandError(f"{source}: no candles file {', '.join(missing)}")
    if asset is not None:
        return found[asset]
    return found
