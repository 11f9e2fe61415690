"""Rewrite candles stored one item per bar (before candles were packed) into packed items,
CANDLE_PERIOD_BARS bars per item (docs/storage.md). CANDLES_TABLE and AWS_REGION (and,
locally, DYNAMODB_ENDPOINT) say which table.

Safe to run again and beside live imports: packed items are upserted by open time. Run it
before deploying the engine that reads packed candles, then once more after the deploy (for
anything imported in between) with `--delete`, which deletes each market's rows once its
packed items are written.
"""

from __future__ import annotations

import argparse

from engine.adapters.dynamodb import DynamoCandleRepository, configure
from engine.settings import Settings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--delete", action="store_true", help="delete the rows once they are packed"
    )
    args = parser.parse_args(argv)
    configure(Settings.from_env())
    migrated = DynamoCandleRepository().migrate_rows(delete=args.delete)
    for market, rows in migrated.items():
        print(f"{market}: {rows} rows packed" + (" and deleted" if args.delete else ""))
    print(f"{sum(migrated.values())} rows in {len(migrated)} markets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
