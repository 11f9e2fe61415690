"""Idempotency of the bulk function's own deliveries, on the real DynamoDB adapters (moto):
the scheduled EventBridge event delivered twice, and a fan-out SQS chunk redelivered.

The trials are those of test_idempotency.py (whose machinery and checks this file uses), in a
file of their own so that pytest-xdist runs the two halves side by side.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.trials import IdempotencyTrials, run_pattern, trial_runner

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trials() -> Iterator[IdempotencyTrials]:
    yield from trial_runner()


@pytest.mark.parametrize("pattern", ["eventbridge", "sqs"])
def test_every_delivery_pattern_leaves_the_state_of_one_clean_evaluation(
    trials: IdempotencyTrials, pattern: str
) -> None:
    run_pattern(trials, pattern)
