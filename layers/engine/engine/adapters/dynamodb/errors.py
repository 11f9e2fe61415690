"""Storage errors beyond the service-level ones in engine.service.errors."""

from __future__ import annotations

from engine.service.errors import EngineError


class StorageError(EngineError):
    """DynamoDB refused a request for a reason retrying cannot fix (a bug or a misconfiguration)."""

    status = 500
    code = "storage_error"


class TransactionTooLarge(EngineError):
    """One evaluation's changes exceed what one DynamoDB transaction can hold.

    The commit is never split: a half-applied evaluation is worse than a failed one.
    """

    status = 500
    code = "transaction_too_large"


class StoredStrategyInvalid(EngineError):
    """A stored strategy definition no longer parses (for example after a TA-Lib upgrade)."""

    status = 500
    code = "stored_strategy_invalid"


class TableMissing(EngineError):
    """A table (or index) the engine reads or writes does not exist: a deployment or
    configuration problem, answered 503 with its own code rather than as a bug."""

    status = 503
    code = "storage_table_missing"
