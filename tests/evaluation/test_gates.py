"""Gates decide promotion to serving: each rule here is one a reviewer would insist on."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from healthnav.evaluation.gates import (
    COST_METRICS,
    QUALITY_METRICS,
    EvaluationGates,
    evaluate_gates,
)

pytestmark = pytest.mark.unit


def test_design_example_parses_with_camel_case_names() -> None:
    gates = EvaluationGates.model_validate({"rougeL": 0.30, "mcqAccuracy": 0.45})
    assert gates.rouge_l == 0.30 and gates.mcq_accuracy == 0.45
    assert gates.to_dict(exclude_none=True) == {
        "rougeL": 0.3,
        "mcqAccuracy": 0.45,
        "minExamples": 1,
        "allowPartial": False,
    }


def test_every_metric_key_is_a_gate() -> None:
    """The extension point: a new metric key in QUALITY_METRICS/COST_METRICS needs its gate field."""
    quality = EvaluationGates.model_validate(dict.fromkeys(QUALITY_METRICS, 0.5))
    assert quality.minimums() == dict.fromkeys(QUALITY_METRICS, 0.5)
    cost = EvaluationGates.model_validate({"max" + k[0].upper() + k[1:]: 1.0 for k in COST_METRICS})
    assert cost.maximums() == dict.fromkeys(COST_METRICS, 1.0)
    regression = EvaluationGates.model_validate(
        {"maxRegressionVsBase": 0.1, "regressionMetrics": list(QUALITY_METRICS)}
    )
    assert regression.regression_metrics == list(QUALITY_METRICS)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"rougel": 0.3}, "rougel"),
        ({"rougeL": 1.5}, "rougeL"),
        ({"regressionMetrics": ["bleu"]}, "maxRegressionVsBase"),
        ({"maxRegressionVsBase": 0.1, "regressionMetrics": ["bleu", "bleu"]}, "repeat"),
    ],
)
def test_invalid_gates_name_the_field(payload: dict, field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        EvaluationGates.model_validate(payload)


def test_minimums_pass_and_fail() -> None:
    gates = {"rougeL": 0.30, "mcqAccuracy": 0.45}
    assert evaluate_gates({"rougeL": 0.31, "mcqAccuracy": 0.45}, None, gates).passed
    result = evaluate_gates({"rougeL": 0.29, "mcqAccuracy": 0.9}, None, gates)
    assert not result.passed and result.reason == "GatesFailed"
    assert [c.metric for c in result.failures] == ["rougeL"]
    assert "rougeL 0.2900 < minimum 0.3000" in result.message


def test_a_gated_metric_that_was_not_measured_fails() -> None:
    result = evaluate_gates({"rougeL": 0.9}, None, {"mcqAccuracy": 0.4})
    assert not result.passed
    assert "mcqAccuracy was not measured" in result.message


def test_regression_vs_base() -> None:
    gates = {"maxRegressionVsBase": 0.02}
    base = {"rougeL": 0.40, "mcqAccuracy": 0.50, "bleu": None}
    assert evaluate_gates({"rougeL": 0.39, "mcqAccuracy": 0.60, "bleu": 0.1}, base, gates).passed
    result = evaluate_gates({"rougeL": 0.45, "mcqAccuracy": 0.47}, base, gates)
    assert not result.passed
    assert [c.metric for c in result.failures] == ["mcqAccuracy"]
    assert "regressed by 0.0300" in result.message


def test_regression_without_base_metrics_fails_rather_than_passing_unchecked() -> None:
    result = evaluate_gates({"rougeL": 0.9}, None, {"maxRegressionVsBase": 0.0})
    assert not result.passed and "base model was not evaluated" in result.message


def test_regression_restricted_to_named_metrics() -> None:
    gates = {"maxRegressionVsBase": 0.0, "regressionMetrics": ["redFlagRecall"]}
    base = {"rougeL": 0.5, "redFlagRecall": 1.0}
    assert evaluate_gates({"rougeL": 0.1, "redFlagRecall": 1.0}, base, gates).passed
    assert not evaluate_gates({"rougeL": 0.9, "redFlagRecall": 0.8}, base, gates).passed


def test_maximums_for_latency_and_cost() -> None:
    gates = {"maxLatencyP95Seconds": 2.0, "maxCostPerQueryUsd": 0.01}
    assert evaluate_gates({"latencyP95Seconds": 1.5, "costPerQueryUsd": 0.002}, None, gates).passed
    result = evaluate_gates({"latencyP95Seconds": 2.5, "costPerQueryUsd": 0.002}, None, gates)
    assert [c.metric for c in result.failures] == ["latencyP95Seconds"]


def test_partial_results_fail_unless_allowed() -> None:
    metrics = {"rougeL": 0.9, "partial": True}
    assert not evaluate_gates(metrics, None, {"rougeL": 0.3}).passed
    assert evaluate_gates(metrics, None, {"rougeL": 0.3, "allowPartial": True}).passed
    assert not evaluate_gates(metrics, None, None).passed  # no gates, but still not a complete evaluation
    assert evaluate_gates({"rougeL": 0.1}, None, None).reason == "NoGates"


def test_too_few_examples_fail_coverage() -> None:
    metrics = {"mcqAccuracy": 1.0, "counts": {"mcqAccuracy": 3}}
    result = evaluate_gates(metrics, None, {"mcqAccuracy": 0.5, "minExamples": 50})
    assert not result.passed and result.failures[0].kind == "coverage"
