"""`python -m engine`: the engine's command line (DESIGN §9).

Every subcommand is one registrar, `add_<name>_command(subparsers)`, which adds its parser
and sets `handler` to a function `(args) -> exit code`. `build_parser` calls every registrar
that `registrars()` lists; a command written in another module is added by importing its
registrar there. A handler signals bad input by raising `CommandError`: `main` prints its
message to stderr and exits with its code (2, like argparse's own usage errors).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from engine.core.strategy import Strategy

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Registrar: TypeAlias = Callable[[Subparsers], None]
Handler: TypeAlias = Callable[[argparse.Namespace], int]

EXIT_OK = 0
EXIT_INVALID_INPUT = 2


class CommandError(Exception):
    """Bad input to a command: printed as `error: <message>` and exits with `exit_code`."""

    def __init__(self, message: str, exit_code: int = EXIT_INVALID_INPUT) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


# --- the parser -----------------------------------------------------------------------------


def registrars() -> list[Registrar]:
    """Every subcommand's registrar, in the order `--help` lists them.

    To add a command, write `add_<name>_command(subparsers)` (in its own module when it
    brings its own dependencies, e.g. storage) and append it here.
    """
    from engine.commands import add_store_commands  # brings storage: imported on demand

    return [add_store_commands, add_replay_command]


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


# --- shared input helpers -------------------------------------------------------------------


def load_strategy_file(path: str | Path) -> Strategy:
    """Read and validate a strategy JSON file; a CommandError names every problem."""
    from engine.core.strategy import StrategyInvalid, parse_strategy

    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        data: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(
            f"{path}: not valid JSON: line {exc.lineno} column {exc.colno}: {exc.msg}"
        ) from None
    try:
        return parse_strategy(data)
    except StrategyInvalid as exc:
        count = len(exc.problems)
        lines = [f"{path}: invalid strategy ({count} problem{'s' if count != 1 else ''}):"]
        lines += [f"  {where or '(top level)'}: {message}" for where, message in exc.problems]
        raise CommandError("\n".join(lines)) from None


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")


# --- replay ---------------------------------------------------------------------------------


def add_replay_command(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "replay",
        help="run a strategy bar by bar over a candles file, from an empty state",
        description=(
            "Evaluate a strategy at every bar of a candles file, exactly as the live engine "
            "would, starting from an empty execution state. Writes DIR/trades.json (closed "
            "trades) and DIR/orders.json (every order in its final status)."
        ),
    )
    parser.add_argument("--strategy", required=True, metavar="FILE.json", help="strategy JSON")
    parser.add_argument(
        "--candles",
        required=True,
        metavar="FILE.csv",
        help="candles of the strategy's timeframe: .csv (time,open,high,low,close,volume) "
        "or .parquet",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--asset", help="the asset the candles hold (required when the strategy has several)"
    )
    parser.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="never show a progress bar (otherwise shown on stderr for long runs)",
    )
    parser.set_defaults(handler=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    from engine.candles_io import CandlesFileError, read_candles_file
    from engine.replay import pick_asset, replay

    strategy = load_strategy_file(args.strategy)
    try:
        asset = pick_asset(strategy, args.asset)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    try:
        candles = read_candles_file(args.candles, strategy.timeframe)
    except CandlesFileError as exc:
        raise CommandError(str(exc)) from None
    try:
        result = replay(strategy, candles, asset=asset, progress=args.progress)
    except ValueError as exc:
        raise CommandError(f"{args.candles}: {exc}") from None

    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "trades.json", result.trade_records())
        write_json(out / "orders.json", result.order_records())
    except OSError as exc:
        raise CommandError(f"{out}: cannot write: {exc.strerror or exc}") from None

    for warning in result.warnings:
        if warning.code == "undefined_value":
            continue  # warm-up: expected on the first bars of every replay
        print(f"warning: [{warning.code}] {warning.message}", file=sys.stderr)
    print(
        f"replay {result.strategy_id} {result.asset} {result.timeframe}: "
        f"{result.bars} bars, {len(result.trades)} trades, "
        f"total pnl {result.total_pnl:.2f}, {len(result.open_positions)} open at the end "
        f"-> {out}"
    )
    return EXIT_OK
