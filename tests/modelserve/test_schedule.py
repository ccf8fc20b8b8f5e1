"""autoscaling.schedule: which window is in force, when the next change comes, and what reaches Ray.

Pure functions and builders, no cluster: the window is resolved from a given instant, so every
case is deterministic (no sleeping until 07:30).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from ms_helpers import manifest, schedule, valid_spec
from pydantic import ValidationError

from healthnav.operator.modelserve_spec import ModelServeSpec
from healthnav.operator.rayservice import ray_service, spec_at
from healthnav.operator.schedule import ModelServeAutoscaling, active_capacity
from healthnav.operator.settings import OperatorSettings

pytestmark = pytest.mark.unit
NY = ZoneInfo("America/New_York")


def _autoscaling(**sched: Any) -> ModelServeAutoscaling:
    return ModelServeAutoscaling.model_validate(
        {"minReplicas": 0, "maxReplicas": 2, "schedule": {**schedule(), **sched}}
    )


def _at(*args: int, tz: ZoneInfo = NY) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("when", "window", "min_replicas", "max_replicas"),
    [
        (_at(2026, 12, 7, 9, 0), "clinic-hours", 1, 4),  # Monday morning
        (_at(2026, 12, 7, 7, 29), None, 0, 2),  # a minute before opening
        (_at(2026, 12, 7, 7, 30), "clinic-hours", 1, 4),  # opening: start is inclusive
        (_at(2026, 12, 7, 19, 0), None, 0, 2),  # closing: end is exclusive
        (_at(2026, 12, 12, 10, 0), None, 0, 2),  # Saturday: no window
        (_at(2026, 12, 7, 14, 0, tz=UTC), "clinic-hours", 1, 4),  # 09:00 in New York
        (_at(2026, 12, 7, 3, 0, tz=UTC), None, 0, 2),  # 22:00 Sunday in New York
    ],
)
def test_the_window_in_force_follows_local_wall_clock_time(
    when: datetime, window: str | None, min_replicas: int, max_replicas: int
) -> None:
    capacity = active_capacity(_autoscaling(), when)
    assert capacity.window == window
    assert (capacity.autoscaling.min_replicas, capacity.autoscaling.max_replicas) == (
        min_replicas,
        max_replicas,
    )


def test_next_change_is_the_next_boundary_across_a_weekend() -> None:
    friday_close = active_capacity(_autoscaling(), _at(2026, 12, 11, 18, 0))
    assert friday_close.next_change_seconds == 3600  # closes at 19:00
    friday_night = active_capacity(_autoscaling(), _at(2026, 12, 11, 20, 0))
    assert friday_night.next_change_seconds == (2 * 24 + 11.5) * 3600  # Monday 07:30


def test_a_window_keeps_its_local_hours_across_daylight_saving() -> None:
    # US clocks go forward on Sunday 8 March 2026: 07:30 is 12:30 UTC before, 11:30 UTC after
    before = active_capacity(_autoscaling(), _at(2026, 3, 6, 12, 30, tz=UTC))
    after = active_capacity(_autoscaling(), _at(2026, 3, 9, 11, 30, tz=UTC))
    assert before.window == after.window == "clinic-hours"
    assert active_capacity(_autoscaling(), _at(2026, 3, 9, 11, 29, tz=UTC)).window is None


def test_an_overnight_window_belongs_to_the_day_it_starts() -> None:
    nights = _autoscaling(
        windows=[
            {
                "name": "weekend-nights",
                "days": ["Fri"],
                "start": "22:00",
                "end": "06:00",
                "minReplicas": 1,
                "maxReplicas": 1,
            }
        ]
    )
    assert active_capacity(nights, _at(2026, 12, 11, 23, 0)).window == "weekend-nights"  # Friday night
    assert active_capacity(nights, _at(2026, 12, 12, 5, 59)).window == "weekend-nights"  # Saturday dawn
    assert active_capacity(nights, _at(2026, 12, 12, 23, 0)).window is None  # Saturday night
    assert active_capacity(nights, _at(2026, 12, 10, 23, 0)).window is None  # Thursday night


def test_overlapping_windows_the_first_listed_wins() -> None:
    both = _autoscaling(
        windows=[
            {"name": "flu-season-peak", "start": "08:00", "end": "12:00", "minReplicas": 3, "maxReplicas": 8},
            {"name": "daytime", "start": "06:00", "end": "22:00", "minReplicas": 1, "maxReplicas": 4},
        ]
    )
    assert active_capacity(both, _at(2026, 12, 7, 9, 0)).window == "flu-season-peak"
    assert active_capacity(both, _at(2026, 12, 7, 13, 0)).window == "daytime"


def test_an_unknown_time_zone_is_refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="Mars/Olympus_Mons"):
        _autoscaling(timeZone="Mars/Olympus_Mons")


def test_the_window_reaches_ray_serve_in_place_and_the_schedule_does_not() -> None:
    spec_dict = valid_spec()
    spec_dict["autoscaling"] = {"minReplicas": 0, "maxReplicas": 2, "schedule": schedule()}
    ms = manifest("triage", spec=spec_dict)
    ms["metadata"]["uid"] = "1234-abcd"
    spec = ModelServeSpec.model_validate(ms["spec"])
    settings = OperatorSettings()
    open_rs = ray_service(
        ms, spec_at(spec, active_capacity(spec.autoscaling, _at(2026, 12, 7, 9, 0))), [], settings
    )
    closed_rs = ray_service(
        ms, spec_at(spec, active_capacity(spec.autoscaling, _at(2026, 12, 7, 21, 0))), [], settings
    )

    def bounds(rs: dict[str, Any]) -> tuple[int, int]:
        args = yaml.safe_load(rs["spec"]["serveConfigV2"])["applications"][0]["args"]
        assert "schedule" not in args["autoscaling"]  # the server never sees the schedule
        return args["autoscaling"]["minReplicas"], args["autoscaling"]["maxReplicas"]

    assert bounds(open_rs) == (1, 4) and bounds(closed_rs) == (0, 2)
    workers = [g for rs in (open_rs, closed_rs) for g in rs["spec"]["rayClusterConfig"]["workerGroupSpecs"]]
    assert [(g["minReplicas"], g["maxReplicas"]) for g in workers] == [(1, 4), (0, 2)]

    # only what KubeRay applies in place differs: the Serve config and the workers' replica bounds
    def cluster_without_replica_bounds(rs: dict[str, Any]) -> Any:
        cluster = yaml.safe_load(yaml.safe_dump(rs["spec"]["rayClusterConfig"]))
        for g in cluster["workerGroupSpecs"]:
            for k in ("replicas", "minReplicas", "maxReplicas"):
                g.pop(k)
        return cluster

    assert cluster_without_replica_bounds(open_rs) == cluster_without_replica_bounds(closed_rs)


def test_without_a_schedule_the_spec_is_rendered_as_before() -> None:
    spec = ModelServeSpec.model_validate(valid_spec())
    capacity = active_capacity(spec.autoscaling, datetime.now(UTC))
    assert capacity.window is None and capacity.next_change_seconds is None
    assert spec_at(spec, capacity) is spec
