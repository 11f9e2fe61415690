"""Strategies parsed and compiled part by part: each distinct body validated and compiled once.

Thousands of stored strategies are mostly a few templates (the same indicators, conditions
and execution config) on other assets under other ids. Validating each one whole with
pydantic (structure, TA-Lib metadata, references) and compiling its conditions costs far
more than evaluating it, and builds a million objects for ten thousand strategies. Here a
document is split into its shell (`strategy_id`, `name`, `status`, `assets`) and its body
(everything else, keyed by its serialized content in the document's key order): a body seen before, with as many
assets, reuses the strategy validated whole the first time (a template), and only the shell
is validated (with Strategy's own field definitions); the result shares the template's body
objects, so the compiled conditions and cooldown rules are shared too.

Why that is the same as `parse_strategy`: every rule of a strategy that reads the shell is
either a constraint of a shell field or one of Strategy's model validators, which read the
shell only for duplicate assets and their count (the template is per count; duplicates and
any shell problem take the full path, which names the problem). A document the fast path
is unsure of (not an object, reserved id, anything failing) is parsed in full, so errors are
always parse_strategy's own. The fast path turns itself off if Strategy's fields or
validators are not the ones this was written against (a test says so, so the change is
noticed); differential tests compare both paths on generated documents.
"""

from __future__ import annotations

import marshal
import threading
from collections import OrderedDict
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from engine.core.evaluate import CompiledStrategy, compile_strategy
from engine.core.strategy import RESERVED_STRATEGY_IDS, Strategy, parse_strategy

SHELL_FIELDS: Final = ("strategy_id", "name", "status", "assets")
# Strategy's validators as this module knows them: they read the shell only as described
# above. Another validator (or a changed field set) turns the fast path off.
KNOWN_VALIDATORS: Final = frozenset({"_not_reserved", "_within_limits", "_check_references"})
DEFAULT_MAX_TEMPLATES: Final = 4_096
# Strategy's derived facts (cached properties) that read only the body and the asset count:
# computed once on the template, carried by every strategy made from it. Any other cached
# value is left out of the copies, to be computed for each strategy itself.
BODY_FACTS: Final = ("warmup_bars", "warnings", "max_writes_per_evaluation", "indicators_key")


def _validator_names() -> frozenset[str]:
    decorators = Strategy.__pydantic_decorators__
    kinds = (
        decorators.field_validators,
        decorators.model_validators,
        decorators.validators,
        decorators.root_validators,
        decorators.field_serializers,
        decorators.model_serializers,
    )
    return frozenset(name for kind in kinds for name in kind)


def fast_path_available() -> bool:
    """Whether Strategy still has the shell fields and validators the fast path relies on."""
    return set(SHELL_FIELDS) <= set(Strategy.model_fields) and (
        _validator_names() == KNOWN_VALIDATORS
    )


def _shell_model() -> type[BaseModel]:
    """The shell fields with Strategy's own definitions (types, patterns, lengths)."""
    fields: dict[str, Any] = {
        name: (Strategy.model_fields[name].annotation, Strategy.model_fields[name])
        for name in SHELL_FIELDS
    }
    config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False, strict=True)
    model: type[BaseModel] = create_model("StrategyShell", __config__=config, **fields)
    return model


class StrategyParts:
    """Templates by (body, asset count), and compiled templates; bounded, thread-safe.
    `fast` counts strategies made from a template, `full` those parsed whole."""

    def __init__(self, *, max_templates: int = DEFAULT_MAX_TEMPLATES) -> None:
        self.max_templates = max_templates
        self.enabled = fast_path_available()
        self._shell = _shell_model() if self.enabled else None
        self._templates: OrderedDict[tuple[bytes, int], Strategy] = OrderedDict()
        # id(template.entry) -> the template, and its compilation once asked for: the entry
        # object is the template's own (each is validated afresh), kept alive by the template
        self._by_entry: dict[int, tuple[Strategy, CompiledStrategy | None]] = {}
        self._fields_sets: dict[frozenset[str], set[str]] = {}
        self._lock = threading.Lock()
        self.fast = 0
        self.full = 0

    def parse(self, data: Any) -> Strategy:
        """parse_strategy(data): an equal Strategy, or the same StrategyInvalid."""
        strategy = self._fast(data) if self.enabled else None
        if strategy is None:
            self.full += 1
            return parse_strategy(data)
        return strategy

    def _fast(self, data: Any) -> Strategy | None:
        if not isinstance(data, dict):
            return None
        assets = data.get("assets")
        if not isinstance(assets, list) or len(set(map(str, assets))) != len(assets):
            return None  # duplicates, or not a list: the full path names the problem
        strategy_id = data.get("strategy_id")
        if not isinstance(strategy_id, str) or strategy_id in RESERVED_STRATEGY_IDS:
            return None
        shell = {k: v for k, v in data.items() if k in SHELL_FIELDS}
        body = {k: v for k, v in data.items() if k not in SHELL_FIELDS}
        try:
            # marshal's version 2 has no back-references: equal bytes are equal content of
            # equal types (1, 1.0 and true differ), in the document's own key order
            key = (marshal.dumps(body, 2), len(assets))
        except ValueError:
            return None
        with self._lock:
            template = self._templates.get(key)
            if template is not None:
                self._templates.move_to_end(key)
        if template is None:
            self.full += 1
            try:
                template = parse_strategy(data)
            except ValueError:
                self.full -= 1  # the caller's full parse raises it again, the same
                return None
            for fact in BODY_FACTS:
                getattr(template, fact, None)
            self._remember(key, template)
            return template
        assert self._shell is not None
        try:
            checked = self._shell.model_validate(shell)
        except ValidationError:
            return None
        # the template's body objects (shared) and derived facts, the document's own shell
        values = {k: v for k, v in template.__dict__.items() if k in _KEPT}
        values.update((k, checked.__dict__[k]) for k in SHELL_FIELDS)
        # the fields this document set, as parse_strategy would record them
        fields_set = (template.model_fields_set - set(SHELL_FIELDS)) | set(shell)
        # one set object for every strategy with these fields set (frozen models never
        # change theirs): tens of thousands of strategies, a handful of sets
        fields_set = self._fields_sets.setdefault(frozenset(fields_set), fields_set)
        self.fast += 1
        # what BaseModel.model_construct does, without filling in defaults first
        strategy = Strategy.__new__(Strategy)
        setattr_ = object.__setattr__
        setattr_(strategy, "__dict__", values)
        setattr_(strategy, "__pydantic_fields_set__", fields_set)
        setattr_(strategy, "__pydantic_extra__", None)
        setattr_(strategy, "__pydantic_private__", None)
        return strategy

    def _remember(self, key: tuple[bytes, int], template: Strategy) -> None:
        with self._lock:
            self._templates[key] = template
            self._templates.move_to_end(key)
            self._by_entry[id(template.entry)] = (template, None)
            while len(self._templates) > self.max_templates:
                _, old = self._templates.popitem(last=False)
                self._by_entry.pop(id(old.entry), None)

    def compile(self, strategy: Strategy) -> CompiledStrategy:
        """compile_strategy(strategy), sharing the compilation of its template when it has
        one (the same body objects: nothing compiled depends on the shell)."""
        if not self.enabled:
            return compile_strategy(strategy)
        with self._lock:
            found = self._by_entry.get(id(strategy.entry))
        if found is None or not _same_body(strategy.__dict__, found[0].__dict__):
            return compile_strategy(strategy)
        template, compiled = found
        if compiled is None:
            compiled = compile_strategy(template)
            with self._lock:
                if id(template.entry) in self._by_entry:
                    self._by_entry[id(template.entry)] = (template, compiled)
        return compiled.for_strategy(strategy)

    @property
    def stats(self) -> dict[str, int]:
        return {"templates": len(self._templates), "fast": self.fast, "full": self.full}


_KEPT: Final = frozenset(Strategy.model_fields) | frozenset(BODY_FACTS)


_BODY_FIELDS: Final = tuple(name for name in Strategy.model_fields if name not in SHELL_FIELDS)


def _same_body(values: dict[str, Any], template: dict[str, Any]) -> bool:
    return all(values[name] is template[name] for name in _BODY_FIELDS)
