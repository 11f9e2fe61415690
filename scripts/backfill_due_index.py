"""Put every strategy stored before the schedule's due index existed into it (due at the next
tick). Run once after upgrading a stack: STRATEGIES_TABLE and AWS_REGION (and, locally,
DYNAMODB_ENDPOINT) say which table. Safe to run again: it only touches strategies that have
no `next_due_ms`."""

from __future__ import annotations

from engine.adapters.dynamodb import DynamoStrategyRepository, configure
from engine.settings import Settings


def main() -> None:
    configure(Settings.from_env())
    count = DynamoStrategyRepository().backfill_schedule()
    print(f"{count} strategies made due at the next tick")


if __name__ == "__main__":
    main()
