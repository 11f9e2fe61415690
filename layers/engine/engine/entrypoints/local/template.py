"""Reading template.yaml: the routes the local server serves come from here, not a copy."""

from __future__ import annotations

import importlib.util
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[5]
TEMPLATE = REPO_ROOT / "template.yaml"


class CloudFormationLoader(yaml.SafeLoader):
    """A SafeLoader that reads CloudFormation's short-form intrinsic functions (`!Ref`,
    `!GetAtt`, `!Sub`, `!If`, ...) into their long form (`{"Ref": ...}`,
    `{"Fn::GetAtt": [...]}`, ...), the way CloudFormation itself reads them."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        resource, _, attribute = value.partition(".")
        return {"Fn::GetAtt": [resource, attribute]}
    if suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{suffix}": value}


CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: Path = TEMPLATE) -> dict[str, Any]:
    with path.open(encoding="utf-8") as handle:
        data = yaml.load(handle, Loader=CloudFormationLoader)  # a SafeLoader subclass
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a mapping")
    return data


def literal_environment(template: dict[str, Any] | None = None) -> dict[str, str]:
    """The functions' Globals environment variables that are plain values, not !Ref/!Sub."""
    template = template or load_template()
    variables = (
        template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    )
    return {name: str(value) for name, value in variables.items() if not isinstance(value, dict)}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # template form, e.g. /api/v1/execution/evaluate/{strategy_id}
    function: str  # logical id
    code_uri: Path
    handler: str  # module.function

    @property
    def pattern(self) -> re.Pattern[str]:
        regex = re.sub(r"\\{([A-Za-z0-9_]+)\\}", r"(?P<\1>[^/]+)", re.escape(self.path))
        return re.compile(f"^{regex}$")

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if method.upper() != self.method:
            return None
        found = self.pattern.match(path)
        return found.groupdict() if found else None

    def load_handler(self) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
        module_name, _, attr = self.handler.rpartition(".")
        module = load_function_module(self.code_uri, module_name, self.function)
        handler: Callable[[dict[str, Any], Any], dict[str, Any]] = getattr(module, attr)
        return handler


def load_function_module(code_uri: Path, module_name: str, function: str) -> ModuleType:
    """Import a function's handler module from its folder, under a name unique to it."""
    unique = f"functions_{function}_{module_name}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, code_uri / f"{module_name}.py")
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {module_name} from {code_uri}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    return module


def api_routes(template: dict[str, Any] | None = None) -> list[Route]:
    """Every Api event of every function in the template, in template order."""
    template = template or load_template()
    globals_fn = template.get("Globals", {}).get("Function", {})
    routes: list[Route] = []
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") != "AWS::Serverless::Function":
            continue
        props = resource.get("Properties", {})
        code_uri = props.get("CodeUri", globals_fn.get("CodeUri"))
        handler = props.get("Handler", globals_fn.get("Handler"))
        for event in (props.get("Events") or {}).values():
            if event.get("Type") != "Api":
                continue
            ev = event["Properties"]
            routes.append(
                Route(
                    method=str(ev["Method"]).upper(),
                    path=str(ev["Path"]),
                    function=logical_id,
                    code_uri=(REPO_ROOT / str(code_uri)).resolve(),
                    handler=str(handler),
                )
            )
    # most specific first: literal segments beat {parameters}
    routes.sort(key=lambda r: (r.path.count("{"), -len(r.path)))
    return routes
