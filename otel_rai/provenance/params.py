"""Reading the canonical parameter tree of a model record (written by `canonical`): the
``get_params(deep=True)`` names and values back (`flatten`), the classes it names, and canonical JSON."""

from __future__ import annotations

import json
from typing import Any

#: The second item of a (name, estimator, ...) entry of a composition's list (sklearn's Pipeline,
#: ColumnTransformer, FeatureUnion, Voting*, Stacking*) when it is no estimator.
_PASSTHROUGH = ("drop", "passthrough")


def qualname(cls: type) -> str:
    """``module.Qualname`` of a class."""
    return f"{cls.__module__}.{cls.__qualname__}"


def dumps(value: Any) -> str:
    """Canonical JSON text: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """The ``get_params(deep=True)`` keys of a canonical estimator tree, with their canonical values."""
    out: dict[str, Any] = {}
    params = tree.get("params") or {}
    for name, value in params.items():
        out[prefix + name] = value
        if _is_node(value):
            out.update(flatten(value, f"{prefix}{name}__"))
    for value in params.values():  # the named parts of a composition
        if not isinstance(value, list):
            continue
        for item in value:
            if (isinstance(item, list) and len(item) >= 2 and isinstance(item[0], str)
                    and (_is_node(item[1]) or item[1] in _PASSTHROUGH)):
                out[prefix + item[0]] = item[1]
                if _is_node(item[1]):
                    out.update(flatten(item[1], f"{prefix}{item[0]}__"))
    return out


def _is_node(value: Any) -> bool:
    return isinstance(value, dict) and "class" in value and "params" in value


def classes(tree: Any) -> list[str]:
    """Every class named in a canonical tree (the model's and its parts'), in first-seen order."""
    found: dict[str, None] = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if _is_node(node):
                found[node["class"]] = None
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(tree)
    return list(found)


def shallow(value: Any) -> Any:
    """`value` with each nested estimator reduced to its class: what a flat parameter list shows, since
    the estimator's own parameters have keys of their own there."""
    if _is_node(value):
        return {"class": value["class"]}
    if isinstance(value, list):
        return [shallow(v) for v in value]
    if isinstance(value, dict):
        return {k: shallow(v) for k, v in value.items()}
    return value


def display(value: Any) -> str:
    """A parameter value for a reader: an estimator as its class name, a redacted value as what it was,
    ``{type, repr}`` as the repr, JSON otherwise."""
    if _is_node(value):
        return str(value["class"]).rsplit(".", 1)[-1]
    if isinstance(value, dict) and value.get("redacted"):
        size = value.get("shape", value.get("length"))
        return f"(redacted {str(value.get('type')).rsplit('.', 1)[-1]}{'' if size is None else f' {size}'}, " \
               f"digest {str(value.get('digest'))[:12]})"
    if isinstance(value, dict) and set(value) == {"type", "repr"}:
        return str(value["repr"])
    if isinstance(value, list):
        return "[" + ", ".join(display(v) for v in value) + "]"
    if isinstance(value, str):
        return value
    return dumps(value)
