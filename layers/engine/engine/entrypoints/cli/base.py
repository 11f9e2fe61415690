"""What every CLI command shares: its error, its exit codes, its input helpers.

A handler signals bad input by raising `CommandError`: `main` prints its message to stderr in
one line (or a short list of problems) and exits with its code (2, like argparse's own usage
errors).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
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


def write_json_lines(path: Path, lines: list[str]) -> None:
    """A JSON array of already-serialized elements, one per line: a replay's tens of thousands
    of orders stay readable, and a diff shows one line per changed record."""
    body = ",\n  ".join(lines)
    path.write_text((f"[\n  {body}\n]" if lines else "[]") + "\n", encoding="utf-8")
