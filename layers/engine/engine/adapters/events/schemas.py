"""The JSON Schema of each event type, generated from the models of engine.core.events.

docs/schemas/events/<type>.json hold them (a test keeps the files equal to this module's
output); `python -m engine.adapters.events.schemas DIR` writes them again after a model changes.
A change that breaks a subscriber's parsing needs a new `version`; adding an optional field
does not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from engine.core.events import DATA_MODELS, EVENT_TYPES, SCHEMA_VERSION, Event

SCHEMA_ID = "https://execution-engine.example/schemas/events/v{version}/{type}.json"


def event_schema(event_type: str) -> dict[str, Any]:
    """The schema of one event type: the envelope, with `type` fixed and `data` its model."""
    envelope = Event.model_json_schema(mode="serialization")
    data = DATA_MODELS[event_type].model_json_schema(mode="serialization")
    definitions = data.pop("$defs", {})
    properties = dict(envelope["properties"])
    properties["type"] = {"const": event_type, "title": "Type"}
    properties["version"] = {"const": SCHEMA_VERSION, "title": "Version"}
    properties["data"] = data
    schema: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID.format(version=SCHEMA_VERSION, type=event_type),
        "title": event_type,
        "description": (Event.__doc__ or "").strip(),
        "type": "object",
        "properties": properties,
        "required": sorted(envelope.get("required", [])),
        "additionalProperties": False,
    }
    if definitions:
        schema["$defs"] = definitions
    return schema


def schema_files() -> dict[str, str]:
    """File name -> text, for every event type."""
    return {
        f"{t}.json": json.dumps(event_schema(t), indent=2, sort_keys=True) + "\n"
        for t in EVENT_TYPES
    }


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m engine.adapters.events.schemas DIR", file=sys.stderr)
        return 2
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    for name, text in schema_files().items():
        (out / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
