"""The CRD YAML is generated from the pydantic models, and the generator emits structural schemas."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
import yaml
from pydantic import ConfigDict, Field

from healthnav.operator.crdgen import (
    CRDGenerationError,
    CRDSpec,
    build_crd,
    cel,
    model_schema,
    render_crd_yaml,
    validations,
)
from healthnav.operator.crds import all_crds
from healthnav.operator.finetunejob_spec import FINETUNEJOB_CRD
from healthnav.schema import CamelModel

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]


def test_committed_crd_yaml_matches_the_models() -> None:
    for spec in all_crds():
        committed = ROOT / "charts/healthnav/crds" / spec.filename
        assert committed.exists(), f"{committed} missing: run `hnav operator crds`"
        assert committed.read_text() == render_crd_yaml(spec), (
            f"{committed.name} is stale: the pydantic models changed; run `hnav operator crds`"
        )


def _walk(node: Any, path: str = "") -> list[tuple[str, dict[str, Any]]]:
    out = []
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            out.append((f"{path}.{name}", sub))
            out.extend(_walk(sub, f"{path}.{name}"))
        if isinstance(node.get("items"), dict):
            out.extend(_walk(node["items"], f"{path}[]"))
        if isinstance(node.get("additionalProperties"), dict):
            out.extend(_walk(node["additionalProperties"], f"{path}[*]"))
    return out


def test_every_field_is_described_and_structural() -> None:
    crd = yaml.safe_load((ROOT / "charts/healthnav/crds/finetunejob.yaml").read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    fields = _walk(schema["properties"]["spec"], "spec") + _walk(schema["properties"]["status"], "status")
    assert len(fields) > 60
    for path, sub in fields:
        assert sub.get("description"), f"{path} has no description (kubectl explain would be empty)"
        assert "$ref" not in sub and "title" not in sub, path
        if "anyOf" in sub:
            assert sub.get("x-kubernetes-int-or-string") is True, (
                f"{path}: only int-or-string unions are structural"
            )
        else:
            assert "type" in sub, f"{path} has no type"
    # Status is controller-owned: no API-server defaults that would fight the computed status.
    assert "default" not in yaml.safe_dump(schema["properties"]["status"])


def test_crd_metadata_printer_columns_and_defaults() -> None:
    crd = build_crd(FINETUNEJOB_CRD)
    names = crd["spec"]["names"]
    assert (names["plural"], names["shortNames"], names["categories"]) == (
        "finetunejobs",
        ["ftj"],
        ["healthnav"],
    )
    version = crd["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:3] == ["Phase", "Progress", "Loss"]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    assert spec["method"]["default"] == "qlora"
    assert spec["lora"]["default"] == {}  # the API server fills the nested defaults below
    assert spec["lora"]["properties"]["r"]["default"] == 16
    assert spec["lora"]["properties"]["targetModules"]["default"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert spec["training"]["properties"]["learningRate"] == {
        "default": 0.0002,
        "description": spec["training"]["properties"]["learningRate"]["description"],
        "exclusiveMinimum": True,
        "maximum": 1.0,
        "type": "number",
        "minimum": 0,
    }
    assert spec["resources"]["properties"]["memory"]["x-kubernetes-int-or-string"] is True
    assert spec["resources"]["properties"]["affinity"]["x-kubernetes-preserve-unknown-fields"] is True
    rules = [
        r["rule"]
        for r in version["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    ]
    assert "self.method == 'qlora' || !has(self.quantization)" in rules


class _Leaf(CamelModel):
    """A leaf."""

    model_config = ConfigDict(json_schema_extra=validations(cel("self.size > 1", "size > 1")))

    size: int = Field(default=3, gt=0, lt=10)
    """Size, exclusive bounds."""
    kind: Literal["a", "b"] = "a"
    """A choice."""


class _Toy(CamelModel):
    """A toy resource."""

    leaf: _Leaf = Field(
        default_factory=_Leaf, json_schema_extra=validations(cel("self == oldSelf", "immutable"))
    )
    """Nested with default factory."""
    maybe: _Leaf | None = None
    """Optional nested."""
    quantity: int | str = "1Gi"
    """Int or string."""
    free: dict[str, Any] | None = None
    """Anything."""
    labels: dict[str, str] = Field(default_factory=dict)
    """String map."""


def test_generic_translation_of_pydantic_features() -> None:
    schema = model_schema(_Toy)
    props = schema["properties"]
    assert props["leaf"]["default"] == {}
    # The model's own rules and the field's rules both apply (neither replaces the other).
    assert props["leaf"]["x-kubernetes-validations"] == [
        {"rule": "self.size > 1", "message": "size > 1"},
        {"rule": "self == oldSelf", "message": "immutable"},
    ]
    assert props["leaf"]["description"] == "Nested with default factory."  # the field's, not the class's
    size = props["leaf"]["properties"]["size"]
    assert (size["minimum"], size["exclusiveMinimum"], size["maximum"], size["exclusiveMaximum"]) == (
        0,
        True,
        10,
        True,
    )
    assert props["leaf"]["properties"]["kind"]["enum"] == ["a", "b"]
    assert (
        "anyOf" not in props["maybe"]
        and props["maybe"]["type"] == "object"
        and "default" not in props["maybe"]
    )
    assert props["quantity"]["x-kubernetes-int-or-string"] is True
    assert props["free"]["x-kubernetes-preserve-unknown-fields"] is True
    assert props["labels"]["additionalProperties"] == {"type": "string"}
    assert "required" not in schema


class _Undocumented(CamelModel):
    """Has a field without a docstring."""

    x: int = 1


class _Node(CamelModel):
    """Recursive."""

    child: _Node | None = None
    """A child."""


def test_generation_fails_loudly_on_what_a_crd_cannot_express() -> None:
    with pytest.raises(CRDGenerationError, match=r"_Undocumented\.x: every field needs a description"):
        model_schema(_Undocumented)
    with pytest.raises(CRDGenerationError, match="recursive"):
        model_schema(_Node)


def test_crdspec_is_generic() -> None:
    crd = build_crd(
        CRDSpec(
            group="example.io",
            kind="Widget",
            plural="widgets",
            version="v1",
            spec_model=_Toy,
            status_model=_Leaf,
            description="Widgets.",
        )
    )
    assert crd["metadata"]["name"] == "widgets.example.io"
    assert crd["spec"]["names"]["listKind"] == "WidgetList"
