"""The capacity planner: figures checked against hand computation, and ``hnav plan``."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from healthnav.operator.modelserve_spec import ModelServeSpec
from healthnav.planning import capacity as planner

pytestmark = pytest.mark.unit


def test_plan_default_l4_100k_by_hand() -> None:
    p = planner.plan(planner.PlanInputs(assessments_per_month=100_000))
    busy_s = 12 * 3600 * 22  # 950,400 s of business hours
    assert p.avg_rps == pytest.approx(100_000 / busy_s)
    assert p.peak_rps == pytest.approx(3 * 100_000 / busy_s)  # 0.3157 req/s
    assert p.gpu_seconds_per_request == pytest.approx(1000 / 6000 + 400 / 600)  # 0.8333 s
    assert p.capacity_rps_per_replica == pytest.approx(0.72)  # 0.6 / 0.8333
    assert (p.min_replicas, p.busy_replicas, p.max_replicas) == (1, 1, 2)  # ceil(0.316/0.72)=1, +1 spare
    assert p.target_ongoing_requests == 12  # round(0.72 * (1000/6000 + 400/25)) = round(11.64)
    assert p.gpu_hours == pytest.approx(730)
    assert p.monthly_cost == pytest.approx(730 * 0.80 + 730 * 0.10)  # $657
    assert p.api_cost_per_query == pytest.approx((1000 * 5 + 400 * 15) / 1e6)  # $0.011
    assert p.api_monthly_cost == pytest.approx(1100)
    assert p.cost_per_query == pytest.approx(0.00657)
    assert p.break_even_assessments == 59_728  # ceil(657 / 0.011)


def _simple(**kw: Any) -> planner.PlanInputs:
    """1 GPU-second per request, $1/GPU-h, 200 business hours, no head cost: easy arithmetic."""
    gpu = planner.GpuProfile("test", 1.0, decode_tps=100, prefill_tps=1e9, stream_tps=10)
    base = planner.PlanInputs(
        assessments_per_month=kw.pop("n", 73_000),
        peak_factor=2.0,
        tokens_in=0,
        tokens_out=100,
        gpu=gpu,
        api_price_in_per_m=0,
        api_price_out_per_m=100,  # $0.01 per query
        business_hours_per_day=10,
        business_days_per_month=20,
        target_utilization=1.0,
        head_price_per_hour=0,
    )
    return replace(base, **kw)


def test_plan_scales_replicas_and_cost_with_volume() -> None:
    p = planner.plan(_simple(n=2_000_000))
    # 2,000,000 / 720,000 s = 2.78 req/s avg → 3 busy replicas; peak 5.56 → 6, + 1 spare = 7.
    assert (p.busy_replicas, p.max_replicas) == (3, 7)
    assert p.monthly_cost == pytest.approx(730 * 1 + (3 - 1) * 200)  # one always on + two for 200 h
    assert p.target_ongoing_requests == 10  # 1 req/s * (100 / 10) s


def test_break_even_exact_over_step_costs() -> None:
    assert planner.break_even(_simple()) == 73_000  # $730 / $0.01, one replica carries 720k
    # $0.0005/query: one replica's cost needs 1.46M > 720k; the 4th replica level is the first to close.
    assert planner.break_even(_simple(api_price_out_per_m=5)) == 2_660_000
    # $0.0001/query: each extra replica costs $200 but displaces only $72 of API spend: never.
    assert planner.break_even(_simple(api_price_out_per_m=1)) is None
    # Business-hours only: 200 GPU-h = $200 → 20,000 queries.
    assert planner.break_even(_simple(always_on=False)) == 20_000


def test_planner_rejects_bad_inputs_and_manifest_is_valid() -> None:
    with pytest.raises(ValueError, match="peak_factor"):
        planner.PlanInputs(assessments_per_month=10, peak_factor=0.5)
    p = planner.plan(planner.PlanInputs(assessments_per_month=10_000, always_on=False))
    doc = planner.manifest(p, name="triage")
    spec = ModelServeSpec.model_validate(doc["spec"])
    assert spec.autoscaling.min_replicas == 0 and spec.autoscaling.max_replicas == p.max_replicas


def test_plan_cli_prints_roadmap_table_and_manifest(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from healthnav.cli import app

    out = tmp_path / "ms.yaml"
    result = CliRunner().invoke(app, ["plan", "--assessments-per-month", "100000", "--manifest", str(out)])
    assert result.exit_code == 0, result.output
    for volume in ("1,000", "10,000", "100,000"):
        assert volume in result.output
    assert "59,728" in result.output
    doc = yaml.safe_load(out.read_text())
    assert doc["kind"] == "ModelServe" and doc["spec"]["autoscaling"]["maxReplicas"] == 2
    bad = CliRunner().invoke(app, ["plan", "--gpu-type", "tpu-v5"])
    assert bad.exit_code != 0 and "--gpu-type" in bad.output


def test_business_hours_on_spot_with_off_hours_spillover_by_hand() -> None:
    """The issue-20 plan: GPUs only in business hours, on spot, off-hours traffic to the API."""
    i = planner.PlanInputs(
        assessments_per_month=100_000, always_on=False, spot_discount=0.65, off_hours_share=0.05
    )
    p = planner.plan(i)
    gpu = 12 * 22 * 0.80 * (1 - 0.65)  # one replica for the 264 business hours at the spot price
    head = 730 * 0.10
    spill = 0.05 * 100_000 * 0.011  # off-hours assessments answered by the API
    assert (p.min_replicas, p.busy_replicas) == (0, 1)
    assert p.spillover_monthly_cost == pytest.approx(spill)
    assert p.monthly_cost == pytest.approx(gpu + head + spill)  # $201.9
    assert p.cost_per_query == pytest.approx((gpu + head + spill) / 100_000)
    # break-even: C / (api per query * share served locally)
    assert p.break_even_assessments == math.ceil((gpu + head) / (0.011 * 0.95) - 1e-9)


def test_off_hours_share_is_ignored_when_a_replica_stays_warm() -> None:
    warm = planner.plan(planner.PlanInputs(assessments_per_month=100_000, off_hours_share=0.3))
    assert warm.spillover_monthly_cost == 0 and warm.monthly_cost == pytest.approx(657)


def test_a_business_hours_manifest_carries_the_schedule_and_the_spillover() -> None:
    i = planner.PlanInputs(assessments_per_month=100_000, always_on=False, off_hours_share=0.1)
    doc = planner.manifest(planner.plan(i), time_zone="Europe/London", business_start="07:00")
    spec = ModelServeSpec.model_validate(doc["spec"])  # the CRD's own model accepts it
    schedule = spec.autoscaling.schedule
    assert spec.autoscaling.min_replicas == 0 and schedule is not None
    assert schedule.time_zone == "Europe/London"
    (window,) = schedule.windows
    assert (window.start, window.end, window.min_replicas) == ("07:00", "19:00", 1)
    assert window.days == ["Mon", "Tue", "Wed", "Thu", "Fri"]
    assert spec.spillover is not None and spec.spillover.upstream.api_key_secret_ref.name == "llm-api"
    always = planner.manifest(planner.plan(planner.PlanInputs(assessments_per_month=100_000)))
    assert "schedule" not in always["spec"]["autoscaling"] and "spillover" not in always["spec"]


def test_invalid_plan_inputs_name_the_field() -> None:
    with pytest.raises(ValueError, match="spot_discount"):
        planner.PlanInputs(assessments_per_month=1, spot_discount=1.5)
    with pytest.raises(ValueError, match="off_hours_share"):
        planner.PlanInputs(assessments_per_month=1, off_hours_share=-0.1)


def test_options_price_the_four_ways_to_run_one_volume() -> None:
    i = planner.PlanInputs(assessments_per_month=100_000, off_hours_share=0.05)
    by_name = {o.name: o for o in planner.options(i)}
    assert list(by_name) == [
        "always-on",
        "scheduled+spillover",
        "scale-to-zero+spillover",
        "scheduled+spillover+spot",
    ]
    assert by_name["always-on"].monthly_cost == pytest.approx(657) and by_name["always-on"].spill_share == 0
    spill = 0.05 * 100_000 * 0.011
    assert by_name["scheduled+spillover"].monthly_cost == pytest.approx(264 * 0.80 + 73 + spill)
    spot = by_name["scheduled+spillover+spot"]
    assert spot.monthly_cost == pytest.approx(264 * 0.80 * 0.35 + 73 + spill)
    assert spot.cost_per_assessment == pytest.approx(spot.monthly_cost / 100_000)


def test_scale_to_zero_wakes_for_sparse_night_traffic_and_stays_up_for_dense() -> None:
    """Off hours, a replica is billed except in the part of each gap beyond the downscale delay."""
    off_s = (730 - 264) * 3600
    sparse = planner.scale_to_zero(planner.PlanInputs(assessments_per_month=1_000, off_hours_share=0.05))
    lam = 50 / off_s  # 50 night assessments: gaps of hours, each one a cold start that spills
    wakes = 50 * math.exp(-lam * 600)
    assert sparse.spill_share == pytest.approx(wakes * (1 + lam * 180) / 1_000)
    assert sparse.gpu_hours == pytest.approx(264 + (off_s * (1 - math.exp(-lam * 600)) + wakes * 180) / 3600)
    dense = planner.scale_to_zero(planner.PlanInputs(assessments_per_month=100_000, off_hours_share=0.05))
    assert dense.spill_share < sparse.spill_share and dense.gpu_hours > 600  # up most of the night


def test_plan_json_lists_each_option_with_its_cost_per_assessment() -> None:
    import json

    from typer.testing import CliRunner

    from healthnav.cli import app

    result = CliRunner().invoke(app, ["plan", "--assessments-per-month", "100000", "--json"])
    assert result.exit_code == 0, result.output
    opts = json.loads(result.output)["options"]
    assert {o["assessmentsPerMonth"] for o in opts} == {1_000, 10_000, 100_000}
    best = min(
        (o for o in opts if o["assessmentsPerMonth"] == 100_000), key=lambda o: o["costPerAssessmentUsd"]
    )
    assert best["name"] == "scheduled+spillover+spot" and best["costPerAssessmentUsd"] == pytest.approx(
        0.00202, abs=1e-5
    )
