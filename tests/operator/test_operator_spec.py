"""The pydantic side of validation agrees with the CRD: every bad spec the API server rejects
(tests/operator/test_cluster.py) is rejected here too, with the field named."""

from __future__ import annotations

import pytest
from ftj_helpers import INVALID, manifest, valid_spec

from healthnav.operator.finetunejob_controller import parse_spec
from healthnav.operator.finetunejob_spec import FineTuneJobSpec

pytestmark = pytest.mark.unit


def test_valid_spec_gets_the_design_defaults() -> None:
    spec = FineTuneJobSpec.model_validate(valid_spec())
    assert spec.method == "qlora"
    assert (spec.lora.r, spec.lora.alpha, spec.lora.target_modules) == (
        16,
        32,
        ["q_proj", "k_proj", "v_proj", "o_proj"],
    )
    assert (spec.training.epochs, spec.training.learning_rate) == (3, 2e-4)
    assert (spec.backoff_limit, spec.active_deadline_seconds, spec.suspend) == (2, 86400, False)
    assert spec.resources.memory == "32Gi"
    assert FineTuneJobSpec.model_validate({**valid_spec(), "resources": {"cpu": 8}}).resources.cpu == "8"


@pytest.mark.parametrize("case", [c for c in INVALID if c.in_spec], ids=lambda c: c.id)
def test_invalid_spec_is_rejected_naming_the_field(case) -> None:  # type: ignore[no-untyped-def]
    spec, error = parse_spec(case.build("x"))
    assert spec is None and error
    leaf = case.field.rsplit(".", 1)[-1].split("[")[0]
    assert leaf in error, f"{case.id}: {error!r} does not name {leaf}"


def test_invalid_manifest_list_covers_at_least_15_distinct_fields() -> None:
    assert len({c.field for c in INVALID}) >= 15
    assert manifest("x")["spec"] == valid_spec()
