"""Pydantic JSON schema -> Kubernetes structural OpenAPI v3 schema (what controller-gen emits).

A CRD schema must be *structural*: every node has a `type`, there are no `$ref`s, and
`anyOf`/`oneOf` may only carry value validations. Pydantic's JSON schema differs in a few
systematic ways, each handled by one rule below:

| pydantic                                   | Kubernetes                                           |
|--------------------------------------------|------------------------------------------------------|
| `$ref` into `$defs`                        | the definition inlined; the field's keys win         |
| `Optional[X]`: `anyOf: [X, {type: null}]`  | X with `nullable: true`                               |
| `Literal[...]`: `const` / `enum`           | `enum` with the literal's `type`                      |
| `Union[int, str]`                          | `x-kubernetes-int-or-string: true`                    |
| `exclusiveMinimum: 0` (a number)           | `minimum: 0, exclusiveMinimum: true`                  |
| `additionalProperties: false` (forbid)     | dropped: unknown fields are pruned (see docs/operator.md) |
| `uniqueItems: true`                        | `x-kubernetes-list-type: set` (uniqueItems is banned) |
| `title`                                    | dropped (`kubectl explain` shows descriptions)        |

Defaults are described ("Defaults to ...") and, for our own API, also kept as `default:`, so
the API server fills them in and `kubectl get -o yaml` shows them. The trainer's config keeps
only the description: its defaults belong to the trainer image that runs it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

Defaults = Literal["keep", "describe", "drop"]

_DROPPED = {"title", "$defs", "definitions", "examples", "uniqueItems", "discriminator"}
_NULL = {"type": "null"}


class UnsupportedSchema(ValueError):
    """A pydantic construct with no structural equivalent (the message names the path)."""


def to_structural(schema: dict[str, Any], defaults: Defaults = "keep") -> dict[str, Any]:
    """Convert a pydantic `model_json_schema()` into a structural schema."""
    return _convert(schema, schema.get("$defs", {}), defaults, path="")


def _convert(node: dict[str, Any], defs: dict[str, Any], defaults: Defaults, path: str) -> dict[str, Any]:
    node = _inline_ref(node, defs)
    node = _collapse_any_of(node, defs, path)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED or (key == "additionalProperties" and value is False):
            continue
        if key == "properties":
            out[key] = {name: _convert(child, defs, defaults, f"{path}.{name}") for name, child in value.items()}
        elif key == "additionalProperties" and isinstance(value, dict):
            out[key] = _convert(value, defs, defaults, f"{path}[*]")
        elif key == "items":
            out[key] = _convert(value, defs, defaults, f"{path}[]")
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    if node.get("uniqueItems"):
        out.setdefault("x-kubernetes-list-type", "set")
    _infer_type(out, path)
    _apply_default_policy(out, defaults)
    return _ordered(out)


_FIRST = ("type", "format", "description", "default", "nullable")
_LAST = ("properties", "additionalProperties", "items", "required", "x-kubernetes-validations")


def _ordered(out: dict[str, Any]) -> dict[str, Any]:
    """type and description first, nested schemas last: the YAML reads like controller-gen's."""
    middle = sorted(k for k in out if k not in _FIRST and k not in _LAST)
    return {k: out[k] for k in (*_FIRST, *middle, *_LAST) if k in out}


def _inline_ref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """`{$ref, description}` or `{allOf: [{$ref}], ...}` -> the definition with the field's keys on top."""
    ref = node.get("$ref")
    if ref is None and len(node.get("allOf", [])) == 1 and "$ref" in node["allOf"][0]:
        ref = node["allOf"][0]["$ref"]
    if ref is None:
        return node
    target = defs[ref.rsplit("/", 1)[-1]]
    siblings = {k: v for k, v in node.items() if k not in ("$ref", "allOf")}
    merged = {**_inline_ref(target, defs), **siblings}
    # A class-level CEL rule and a field-level one both apply.
    rules = target.get("x-kubernetes-validations", []) + siblings.get("x-kubernetes-validations", [])
    if rules:
        merged["x-kubernetes-validations"] = rules
    return merged


def _collapse_any_of(node: dict[str, Any], defs: dict[str, Any], path: str) -> dict[str, Any]:
    variants = node.get("anyOf") or node.get("oneOf")
    if node.get("x-kubernetes-int-or-string"):
        rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf", "type")}
        return {**rest, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    if not variants:
        return node
    rest = {k: v for k, v in node.items() if k not in ("anyOf", "oneOf")}
    non_null = [_inline_ref(v, defs) for v in variants if v != _NULL]
    nullable = len(non_null) < len(variants)
    if sorted(v.get("type", "") for v in non_null) == ["integer", "string"]:
        merged = {**rest, "anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
    elif len(non_null) == 1:
        merged = {**non_null[0], **rest}
    else:
        raise UnsupportedSchema(f"{path or '(root)'}: a union of {len(non_null)} types has no structural form")
    if nullable:
        merged["nullable"] = True
    return merged


def _infer_type(out: dict[str, Any], path: str) -> None:
    if "type" in out or out.get("x-kubernetes-int-or-string") or out.get("x-kubernetes-preserve-unknown-fields"):
        return
    if "enum" in out:
        kinds = {type(v) for v in out["enum"]}
        names = {str: "string", int: "integer", float: "number", bool: "boolean"}
        if len(kinds) == 1 and next(iter(kinds)) in names:
            out["type"] = names[next(iter(kinds))]
            return
    if "properties" in out:
        out["type"] = "object"
        return
    raise UnsupportedSchema(f"{path or '(root)'}: no type (a field typed Any has no structural form)")


def _apply_default_policy(out: dict[str, Any], defaults: Defaults) -> None:
    if "default" not in out:
        return
    value = out.pop("default")
    if value is None or defaults == "drop":
        return
    if defaults == "keep":
        out["default"] = value
    # kubectl explain does not show `default`, so the description says it either way.
    if value != [] and value != {}:
        shown = json.dumps(value) if not isinstance(value, str) else value
        text = out.get("description", "")
        out["description"] = f"{text} Defaults to {shown}.".strip()
