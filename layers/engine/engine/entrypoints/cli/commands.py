"""CLI commands over storage: strategies, candles import, evaluate.

Each talks to the DynamoDB `target.choose_target` picks (the local stack, an endpoint, or AWS
only when asked) with the rest of the settings from the environment, as the Lambdas do.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from pathlib import Path
from typing import Any

from engine.core.strategy import ASSET_PATTERN, Strategy, StrategyInvalid, parse_strategy
from engine.core.timeframes import TIMEFRAME_MS
from engine.entrypoints.cli.base import CommandError
from engine.entrypoints.cli.target import add_target_options, settings_for


def add_store_commands(subparsers: Any) -> None:
    strategies = subparsers.add_parser("strategies", help="store, show and list strategies")
    actions = strategies.add_subparsers(dest="action", required=True)
    put = actions.add_parser("put", help="validate and store a strategy JSON file")
    put.add_argument("file", type=Path)
    add_target_options(put)
    put.set_defaults(handler=_strategies_put)
    get = actions.add_parser("get", help="print a stored strategy")
    get.add_argument("strategy_id")
    add_target_options(get)
    get.set_defaults(handler=_strategies_get)
    lst = actions.add_parser("list", help="list stored strategies")
    lst.add_argument("--status", choices=["active", "paused"])
    add_target_options(lst)
    lst.set_defaults(handler=_strategies_list)

    candles = subparsers.add_parser("candles", help="market data in the candle table")
    cactions = candles.add_subparsers(dest="action", required=True)
    imp = cactions.add_parser("import", help="import a CSV (or Parquet) file of candles")
    imp.add_argument("--asset", required=True)
    imp.add_argument("--timeframe", required=True, choices=list(TIMEFRAME_MS))
    imp.add_argument("file", type=Path)
    add_target_options(imp)
    imp.set_defaults(handler=_candles_import)

    ev = subparsers.add_parser("evaluate", help="evaluate a stored strategy now")
    ev.add_argument("strategy_id")
    ev.add_argument("--dry-run", action="store_true", help="write nothing")
    ev.add_argument(
        "--stale-policy",
        choices=["reject", "warn"],
        default=None,
        help="what to do with market data older than two bars "
        "(default: STALE_DATA_POLICY, else warn)",
    )
    add_target_options(ev)
    ev.set_defaults(handler=_evaluate)


def _storage(args: argparse.Namespace) -> None:
    """Point the storage models at the chosen target, before any repository is used."""
    from engine.adapters.dynamodb import configure

    configure(settings_for(args))


def _put_warnings(strategy: Any) -> list[tuple[str, str]]:
    from engine.core.cooldown import cooldown_rules, deprecation_message

    found = list(strategy.warnings)
    if cooldown_rules(strategy.execution_config, strategy.timeframe).legacy:
        message = deprecation_message(strategy.execution_config, strategy.timeframe)
        found.append(("deprecated_cooldown_keys", message))
    return found


def _strategies_put(args: argparse.Namespace) -> int:
    from engine.adapters.dynamodb import DynamoStrategyRepository

    try:
        document = json.loads(args.file.read_text())
        strategy = parse_strategy(document)
    except (OSError, json.JSONDecodeError) as exc:
        raise CommandError(f"{args.file}: cannot read a JSON strategy: {exc}") from None
    except StrategyInvalid as exc:
        problems = "\n".join(f"  {path or '(root)'}: {message}" for path, message in exc.problems)
        raise CommandError(f"{args.file} is not a valid strategy:\n{problems}") from None
    _storage(args)
    DynamoStrategyRepository().put(strategy)
    print(f"stored {strategy.strategy_id}")
    # what every evaluation will warn about, said once where it can still be fixed
    for code, message in _put_warnings(strategy):
        print(f"warning ({code}): {message}", file=sys.stderr)
    return 0


def _strategies_get(args: argparse.Namespace) -> int:
    from engine.adapters.dynamodb import DynamoStrategyRepository

    _storage(args)
    strategy = DynamoStrategyRepository().get(args.strategy_id)
    if strategy is None:
        print(f"no strategy with id {args.strategy_id!r}", file=sys.stderr)
        return 1
    print(json.dumps(stored_document(strategy), indent=2))
    return 0


def _strategies_list(args: argparse.Namespace) -> int:
    from engine.adapters.dynamodb import DynamoStrategyRepository

    _storage(args)
    for s in sorted(
        DynamoStrategyRepository().list(status=args.status), key=lambda s: s.strategy_id
    ):
        print(f"{s.strategy_id}\t{s.status}\t{s.timeframe}\t{','.join(s.assets)}\t{s.name}")
    return 0


def _candles_import(args: argparse.Namespace) -> int:
    from engine.adapters.candle_files import read_candles_file
    from engine.adapters.dynamodb import DynamoCandleRepository

    if not re.fullmatch(ASSET_PATTERN, args.asset):
        raise CommandError(
            f"--asset {args.asset!r} is not an asset symbol (letters, digits and . _ : / -, "
            "up to 32 characters, e.g. BTC/USDT)"
        )
    try:
        candles = read_candles_file(args.file, args.timeframe)
    except (OSError, ValueError) as exc:
        raise CommandError(str(exc)) from None
    _storage(args)
    written = DynamoCandleRepository().put(args.asset, args.timeframe, candles)
    print(f"imported {written} {args.timeframe} candles for {args.asset}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from engine.bootstrap import build_service
    from engine.service.errors import EngineError

    config = settings_for(args)
    policy = args.stale_policy or ("warn" if config.dynamodb_endpoint else config.stale_policy)
    config = dataclasses.replace(config, stale_policy=policy)
    try:
        result = build_service(config).evaluate_by_id(args.strategy_id, persist=not args.dry_run)
    except EngineError as exc:
        print(
            json.dumps({"code": exc.code, "message": exc.message, "details": exc.details}),
            file=sys.stderr,
        )
        return 1
    print(result.model_dump_json(indent=2))
    return 0


def stored_document(strategy: Strategy) -> dict[str, Any]:
    """The strategy as JSON without the keys it leaves unset (an absent deprecated cooldown
    key or informative timeframe would print as null and read as if the strategy set it).
    Every such key defaults to null, so the document stores back as the same strategy."""
    document: dict[str, Any] = strategy.model_dump(mode="json", by_alias=True, exclude_none=True)
    return document
