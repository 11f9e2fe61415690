"""Where a validation error is, in the words of the JSON the user wrote.

pydantic locates an error through the models it tried: a tagged union adds its tag
(`entry.all.all[0]`, `execution_config.stop_loss.percent.value`), a plain union a branch
name (`int`, `Ref`, `function-after[...]`). These helpers drop those, merge a union's
per-branch failures into one problem per place, and suggest the closest key for an unknown
one, so the HTTP API, the CLI and the strategy's own errors name the same path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from engine.core import indicators

# The document's places whose value is a condition (a tagged union of all/any/not/compare).
CONDITION_ROOTS = ("entry", "exit", "short_entry", "short_exit")


def format_path(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def problems_from(error: ValidationError, keys: Iterable[str] = ()) -> list[tuple[str, str]]:
    """Flatten pydantic's errors into (JSON path, message), one per path.

    A union (an operand may be a number, a name or a ref) fails once per branch; those
    branch messages are merged so the caller reads one problem per place.
    """
    merged: dict[str, list[str]] = {}
    for err in error.errors(include_url=False):
        loc = tuple(err["loc"])
        # reference problems carry the document's own path already (no union tags in it)
        path = format_path(loc if err["type"] in _REFERENCE_CODES else clean_loc(loc))
        messages = merged.setdefault(path, [])
        message = error_message(err, keys)
        if message not in messages:
            messages.append(message)
    return [
        (path, msgs[0] if len(msgs) == 1 else "none of the accepted forms: " + "; ".join(msgs))
        for path, msgs in merged.items()
    ]


def error_message(err: Mapping[str, Any], keys: Iterable[str] = ()) -> str:
    """pydantic's message for one error; an unknown key gets the closest of `keys` as a
    suggestion."""
    message = str(err.get("msg", "invalid"))
    loc = tuple(err.get("loc", ()))
    if err.get("type") == "extra_forbidden" and loc and isinstance(loc[-1], str):
        message += indicators.did_you_mean(loc[-1], set(keys))
    return message


_UNION_TAGS = frozenset({"compare", "int", "float", "str", "Ref"})
_CONDITION_TAGS = frozenset({"all", "any", "not"})
_LEVEL_TAGS = frozenset({"percent", "atr", "risk_reward", "trailing_percent", "trailing_atr"})
_REFERENCE_CODES = frozenset(
    {
        "undefined_reference",
        "missing_stop_loss",
        "invalid_fractions",
        "invalid_break_even",
        "reserved_name",
        "invalid_timeframe",
        "too_deep",
        "too_many_conditions",
    }
)


def _is_tag(part: Any, cleaned: list[str | int]) -> bool:
    """Whether `part` is the tag pydantic puts right after a place holding a tagged union."""
    prev = cleaned[-1] if cleaned else None
    if part in _CONDITION_TAGS:  # a condition: entry, exit, an item of all/any, inside not
        return prev in (*CONDITION_ROOTS, "not") or (
            isinstance(prev, int) and len(cleaned) > 1 and cleaned[-2] in ("all", "any")
        )
    if part in _LEVEL_TAGS and isinstance(prev, int):  # an item of a scale-out list
        return len(cleaned) > 1 and cleaned[-2] == "take_profit"
    if part in ("level", "levels"):  # one take-profit level or a scale-out list
        return prev == "take_profit"
    return part in _LEVEL_TAGS and prev in ("stop_loss", "take_profit")


def clean_loc(loc: tuple[Any, ...]) -> tuple[str | int, ...]:
    """Drop pydantic's union tags so paths match the JSON the user wrote.

    entry.all.all[0] -> entry.all[0], entry.not.not.not.not.op -> entry.not.not.op,
    execution_config.stop_loss.percent.value -> execution_config.stop_loss.value.
    """
    cleaned: list[str | int] = []
    after_tag = False  # the part after a tag is the field itself, never another tag
    for part in loc:
        if isinstance(part, str) and (part in _UNION_TAGS or part.startswith("function-")):
            continue
        if not after_tag and _is_tag(part, cleaned):
            # the form of a take-profit (level or levels) is followed by the level's own tag
            after_tag = part not in ("level", "levels")
            continue
        after_tag = False
        cleaned.append(part)
    return tuple(cleaned)
