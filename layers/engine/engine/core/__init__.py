"""The pure engine: strategy model, indicators, conditions, evaluation and cooldown.

Nothing in this package performs I/O. Given a strategy, its execution state and candles it
returns an evaluation result; storage and market data plug in from the outside.
"""
