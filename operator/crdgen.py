"""Generate CustomResourceDefinitions from pydantic models: one source of truth for each CRD.

The pydantic models in ``healthnav.operator`` are what the operator validates and renders
from (each kind's spec module declares its :class:`CRDSpec`; :mod:`healthnav.operator.crds`
lists them); the CRD YAML in ``charts/healthnav/crds/`` is what the API server validates with.
Writing both by hand lets them drift, so the YAML is generated from the models and a test
compares the committed file with a fresh generation.

Pydantic emits JSON Schema (2020-12); the API server wants a *structural* OpenAPI v3 schema.
The translation here is generic (ModelServe uses it too):

* ``$ref``/``$defs`` are inlined (CRD schemas may not reference), recursion is an error;
* ``Optional[X]`` becomes ``X`` (an optional field is simply not required; ``null`` from a
  client is dropped by the API server for non-nullable fields);
* ``default_factory`` defaults are emitted (a nested model's becomes ``{}``, so the API
  server fills in the nested defaults itself and ``kubectl get -o yaml`` shows them);
* JSON Schema 2020 ``exclusiveMinimum: x`` becomes OpenAPI's ``minimum: x`` +
  ``exclusiveMinimum: true``; ``const`` becomes a one-value ``enum``;
* ``int | str`` becomes ``x-kubernetes-int-or-string`` (resource quantities);
* free-form ``dict[str, Any]`` becomes ``x-kubernetes-preserve-unknown-fields``;
* every property must carry a description (from the field's docstring) — generation fails
  otherwise, so ``kubectl explain`` is useful for every field;
* ``x-kubernetes-*`` keys declared next to the models (CEL rules via :func:`cel`, list
  types, …) pass through untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, NoDefault
from pydantic_core import core_schema

from healthnav.contracts.errors import ConfigurationError

# Keys the API server's structural schema understands; anything else pydantic emits
# (title, examples, additionalProperties: false from extra=forbid, …) is dropped.
_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "uniqueItems",
    "minProperties",
    "maxProperties",
    "format",
    "items",
    "properties",
    "additionalProperties",
    "required",
    "nullable",
}
# Formats the API server validates; others (pydantic's "uri", "uuid" for str subtypes…) would
# be silently ignored there while pydantic enforces them, so they are dropped to avoid a false
# sense of agreement.
_FORMATS = {"date-time", "date", "int32", "int64", "float", "double", "byte"}


_RULES = "x-kubernetes-validations"


class CRDGenerationError(ConfigurationError):
    """The model cannot be expressed as a structural CRD schema; the message names the path."""


def cel(
    rule: str,
    message: str | None = None,
    *,
    message_expression: str | None = None,
    field_path: str | None = None,
    reason: str | None = None,
    optional_old_self: bool | None = None,
) -> dict[str, Any]:
    """One ``x-kubernetes-validations`` entry (a CEL rule evaluated by the API server).

    ``field_path`` (e.g. ``.quantization``) makes the API server's error name the offending
    field rather than the object holding the rule. ``reason`` is one of FieldValueInvalid,
    FieldValueForbidden, FieldValueRequired, FieldValueDuplicate.
    """
    out: dict[str, Any] = {"rule": rule}
    if message is not None:
        out["message"] = message
    if message_expression is not None:
        out["messageExpression"] = message_expression
    if field_path is not None:
        out["fieldPath"] = field_path
    if reason is not None:
        out["reason"] = reason
    if optional_old_self is not None:
        out["optionalOldSelf"] = optional_old_self
    return out


def validations(*rules: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """``json_schema_extra`` carrying CEL rules (and other ``x-kubernetes-*`` keys) for a model/field."""
    out: dict[str, Any] = {"x-kubernetes-validations": list(rules)} if rules else {}
    out.update({k.replace("_", "-"): v for k, v in extra.items()})
    return out


class _CRDJsonSchema(GenerateJsonSchema):
    """Pydantic's generator with the two behaviours a CRD needs built in."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        if "default_factory" in schema and not schema.get("default_factory_takes_data"):
            value = schema["default_factory"]()  # type: ignore[call-arg]
            # A nested model's default is "{}": the API server then applies the nested
            # properties' own defaults, which keeps one copy of each default in the schema.
            return {} if isinstance(value, BaseModel) else value
        default = schema.get("default", NoDefault)
        return NoDefault if default is None else default

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of ``model`` (camelCase property names)."""
    raw = model.model_json_schema(by_alias=True, mode="validation", schema_generator=_CRDJsonSchema)
    defs = raw.pop("$defs", {})
    return _structural(raw, defs, path=model.__name__, stack=())


def _structural(
    node: dict[str, Any], defs: dict[str, Any], path: str, stack: tuple[str, ...]
) -> dict[str, Any]:
    node = dict(node)
    if "$ref" in node:
        name = node.pop("$ref").rsplit("/", 1)[-1]
        if name in stack:
            raise CRDGenerationError(f"{path}: recursive model {name} cannot be a CRD schema")
        target = copy.deepcopy(defs[name])
        # The field's own description/default win over the referenced model's docstring; CEL
        # rules of both (the model's own and the field's, e.g. immutability) all apply.
        rules = [*target.get(_RULES, []), *node.pop(_RULES, [])]
        target.update(node)
        if rules:
            target[_RULES] = rules
        return _structural(target, defs, path, (*stack, name))

    for combinator in ("anyOf", "oneOf"):
        if combinator in node:
            options = [_structural(o, defs, path, stack) for o in node.pop(combinator)]
            types = sorted(o.get("type", "") for o in options)
            if types == ["integer", "string"]:
                pattern = next((o["pattern"] for o in options if "pattern" in o), None)
                node = {k: v for k, v in node.items() if k in _KEEP or k.startswith("x-kubernetes-")}
                out = {
                    **node,
                    "anyOf": [{"type": "integer"}, {"type": "string"}],
                    "x-kubernetes-int-or-string": True,
                }
                if pattern:
                    out["pattern"] = pattern
                return out
            if len(options) == 1:
                merged = options[0]
                merged.update({k: v for k, v in node.items() if k in _KEEP or k.startswith("x-kubernetes-")})
                return merged
            raise CRDGenerationError(f"{path}: unions ({combinator}) other than int|str are not structural")
    if "allOf" in node:
        parts = node.pop("allOf")
        if len(parts) != 1:
            raise CRDGenerationError(f"{path}: allOf with several schemas is not supported")
        inner = _structural(parts[0], defs, path, stack)
        inner.update({k: v for k, v in node.items() if k in _KEEP or k.startswith("x-kubernetes-")})
        return inner

    if "const" in node:
        node.setdefault("enum", [node.pop("const")])
    for bound, flag in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node and not isinstance(node[bound], bool):
            node[flag] = node[bound]
            node[bound] = True
    if node.get("format") not in _FORMATS:
        node.pop("format", None)

    if isinstance(node.get("description"), str):
        # Docstrings wrap lines; kubectl explain re-wraps, so keep one paragraph.
        node["description"] = " ".join(node["description"].split())

    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in _KEEP:
            out[key] = value

    kind = out.get("type")
    if "enum" in out and "type" not in out:
        sample = out["enum"][0]
        out["type"] = (
            "boolean"
            if isinstance(sample, bool)
            else "integer"
            if isinstance(sample, int)
            else "number"
            if isinstance(sample, float)
            else "string"
        )
        kind = out["type"]
    if kind is None and not out.get("x-kubernetes-preserve-unknown-fields"):
        # dict[str, Any] / Any: a free-form value.
        out["x-kubernetes-preserve-unknown-fields"] = True
        out.setdefault("type", "object")
        kind = "object"

    if kind == "object":
        if "properties" in out:
            props = {}
            for name, sub in out["properties"].items():
                sub_path = f"{path}.{name}"
                props[name] = _structural(sub, defs, sub_path, stack)
                if not props[name].get("description"):
                    raise CRDGenerationError(f"{sub_path}: every field needs a description (a docstring)")
            out["properties"] = props
            # extra=forbid → additionalProperties: false, which structural schemas forbid next
            # to properties; the API server prunes (or, with strict field validation, rejects)
            # unknown fields instead.
            if out.get("additionalProperties") is False:
                out.pop("additionalProperties")
        elif isinstance(out.get("additionalProperties"), dict):
            out["additionalProperties"] = _structural(out["additionalProperties"], defs, f"{path}[*]", stack)
            if not out["additionalProperties"].get("type") and out["additionalProperties"].get(
                "x-kubernetes-preserve-unknown-fields"
            ):
                out.pop("additionalProperties")
                out["x-kubernetes-preserve-unknown-fields"] = True
        elif out.get("additionalProperties") in (True, None) and "properties" not in out:
            out.pop("additionalProperties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
        if out.get("additionalProperties") is False:
            out.pop("additionalProperties")
    if kind == "array":
        if "items" not in out:
            raise CRDGenerationError(f"{path}: arrays need an item type")
        out["items"] = _structural(out["items"], defs, f"{path}[]", stack)
    return out


def _without_defaults(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


@dataclass(frozen=True)
class PrinterColumn:
    """A ``kubectl get`` column."""

    name: str
    json_path: str
    type: str = "string"
    description: str = ""
    priority: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "type": self.type, "jsonPath": self.json_path}
        if self.description:
            out["description"] = self.description
        if self.priority:
            out["priority"] = self.priority
        return out


AGE_COLUMN = PrinterColumn("Age", ".metadata.creationTimestamp", "date")


@dataclass(frozen=True)
class CRDSpec:
    """Everything about one CRD that is not in its models."""

    group: str
    kind: str
    plural: str
    version: str
    spec_model: type[BaseModel]
    status_model: type[BaseModel]
    description: str
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    printer_columns: tuple[PrinterColumn, ...] = ()
    root_validations: tuple[dict[str, Any], ...] = ()
    scope: str = "Namespaced"
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.plural}.{self.group}"

    @property
    def filename(self) -> str:
        return f"{self.kind.lower()}.yaml"


def build_crd(spec: CRDSpec) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition for ``spec``."""
    spec_schema = model_schema(spec.spec_model)
    # Status is written only by controllers; API-server defaults there would make the stored
    # status differ from what the controller computed, and every reconcile would rewrite it.
    status_schema = _without_defaults(model_schema(spec.status_model))
    root: dict[str, Any] = {
        "type": "object",
        "description": spec.description,
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": "APIVersion defines the versioned schema of this representation of an object.",
            },
            "kind": {
                "type": "string",
                "description": "Kind is the REST resource this object represents.",
            },
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": status_schema,
        },
        "required": ["spec"],
    }
    if spec.root_validations:
        root["x-kubernetes-validations"] = list(spec.root_validations)
    names: dict[str, Any] = {
        "kind": spec.kind,
        "listKind": f"{spec.kind}List",
        "plural": spec.plural,
        "singular": spec.singular or spec.kind.lower(),
    }
    if spec.short_names:
        names["shortNames"] = list(spec.short_names)
    if spec.categories:
        names["categories"] = list(spec.categories)
    version: dict[str, Any] = {
        "name": spec.version,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": root},
        "subresources": {"status": {}},
    }
    if spec.printer_columns:
        version["additionalPrinterColumns"] = [c.to_dict() for c in spec.printer_columns]
    metadata: dict[str, Any] = {"name": spec.name}
    if spec.labels:
        metadata["labels"] = dict(spec.labels)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata,
        "spec": {"group": spec.group, "names": names, "scope": spec.scope, "versions": [version]},
    }


_HEADER = "# GENERATED by `hnav operator crds` from the pydantic models in healthnav.operator; do not edit.\n"


def render_crd_yaml(spec: CRDSpec) -> str:
    """The CRD as the YAML text committed under ``charts/healthnav/crds/`` (stable key order)."""
    return _HEADER + yaml.safe_dump(build_crd(spec), sort_keys=False, width=100, allow_unicode=True)


def write_crds(specs: list[CRDSpec], out_dir: Path) -> list[Path]:
    """Write one ``<kind>.yaml`` per CRD into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in specs:
        path = out_dir / spec.filename
        path.write_text(render_crd_yaml(spec))
        paths.append(path)
    return paths
