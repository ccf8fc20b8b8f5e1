"""Capacity that follows the clock: ``ModelServe.spec.autoscaling.schedule``.

Why: 100k assessments a month is about 0.04 requests/s on average, nearly all in the app's busy
hours, so a GPU kept warm around the clock idles most of the time. A schedule names windows
(days of the week, a start and an end in one time zone) with their own ``minReplicas`` and
``maxReplicas``; outside every window the autoscaling defaults apply (typically
``minReplicas: 0``). The operator resolves the window in force at each reconcile
(:func:`active_capacity`), writes its bounds into the RayService's Serve config (an in-place
update of the running application: no new Ray cluster, see :mod:`healthnav.operator.rayservice`)
and asks to be reconciled again at the next boundary.

Rules, so a reviewer can predict the result:

* a window whose ``end`` is earlier than its ``start`` runs overnight and belongs to the day it
  starts (Fri 22:00-06:00 covers Friday night into Saturday morning); ``end: "24:00"`` is midnight;
* times are wall-clock times in ``timeZone`` (an IANA name), so a window follows daylight saving;
* when windows overlap, the first listed wins.

Example::

    autoscaling:
      minReplicas: 0
      maxReplicas: 2
      schedule:
        timeZone: America/New_York
        windows:
          - name: clinic-hours
            days: [Mon, Tue, Wed, Thu, Fri]
            start: "07:30"
            end: "19:00"
            minReplicas: 1
            maxReplicas: 4
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ConfigDict, Field, model_validator

from healthnav.operator.crdgen import cel, validations
from healthnav.schema import CamelModel
from healthnav.serving.config import AutoscalingSpec

Weekday = Literal["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
WEEKDAYS: tuple[Weekday, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_HHMM_OR_MIDNIGHT = r"^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"
_TIME_ZONE = r"^(UTC|[A-Za-z][A-Za-z0-9_+\-]*(/[A-Za-z0-9_+\-]+){1,2})$"
_WINDOW_NAME = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
MAX_WINDOWS = 32


class ScheduleWindow(CamelModel):
    """Days and hours with their own replica bounds."""

    model_config = ConfigDict(
        json_schema_extra=validations(
            cel(
                "self.minReplicas <= self.maxReplicas",
                "minReplicas must be <= maxReplicas",
                field_path=".minReplicas",
            ),
            cel("self.start != self.end", "start and end must differ", field_path=".end"),
        )
    )

    name: str = Field(min_length=1, max_length=63, pattern=_WINDOW_NAME)
    """Shown in status.scheduleWindow while the window is in force."""
    days: list[Weekday] = Field(
        default_factory=lambda: list(WEEKDAYS),
        min_length=1,
        max_length=7,
        json_schema_extra=validations(x_kubernetes_list_type="set"),
    )
    """Days the window starts on (all seven when unset)."""
    start: str = Field(max_length=5, pattern=_HHMM)
    """Local start time, HH:MM (24-hour clock)."""
    end: str = Field(max_length=5, pattern=_HHMM_OR_MIDNIGHT)
    """Local end time, HH:MM or 24:00; earlier than start: the window runs overnight."""
    min_replicas: int = Field(ge=0, le=1000)
    """Fewest model replicas while the window is in force."""
    max_replicas: int = Field(ge=1, le=1000)
    """Most model replicas while the window is in force."""

    @model_validator(mode="after")
    def _check(self) -> ScheduleWindow:
        if self.min_replicas > self.max_replicas:
            raise ValueError("minReplicas must be <= maxReplicas")
        if self.start == self.end:
            raise ValueError("start and end must differ")
        if len(set(self.days)) != len(self.days):
            raise ValueError("days must not repeat")
        return self


class AutoscalingSchedule(CamelModel):
    """Windows in one time zone; outside them the autoscaling defaults apply."""

    time_zone: str = Field(default="UTC", max_length=64, pattern=_TIME_ZONE)
    """IANA time zone of the windows' times (e.g. Europe/London, America/Chicago)."""
    windows: list[ScheduleWindow] = Field(
        min_length=1,
        max_length=MAX_WINDOWS,
        # a list map keyed by name: the API server refuses two windows with one name
        json_schema_extra=validations(x_kubernetes_list_type="map", x_kubernetes_list_map_keys=["name"]),
    )
    """The first window that covers the current time is in force."""

    @model_validator(mode="after")
    def _check(self) -> AutoscalingSchedule:
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"timeZone {self.time_zone!r} is not a known IANA time zone") from exc
        names = [w.name for w in self.windows]
        if len(set(names)) != len(names):
            raise ValueError("window names must be unique")
        return self


class ModelServeAutoscaling(AutoscalingSpec):
    """The serving application's autoscaling plus the operator's schedule."""

    schedule: AutoscalingSchedule | None = None
    """Windows with their own minReplicas/maxReplicas (business hours up, nights at zero)."""

    def for_serving(self, window: ScheduleWindow | None = None) -> AutoscalingSpec:
        """What Ray Serve is given: the defaults, or a window's bounds; never the schedule."""
        values = self.model_dump(exclude={"schedule"})
        if window is not None:
            values.update(min_replicas=window.min_replicas, max_replicas=window.max_replicas)
        return AutoscalingSpec.model_validate(values)


@dataclass(frozen=True)
class ActiveCapacity:
    """The replica bounds in force now, and when they next change."""

    window: str | None
    """Name of the window in force; None outside every window (or without a schedule)."""
    autoscaling: AutoscalingSpec
    next_change_seconds: float | None
    """Seconds until another window or the defaults take over; None without a schedule."""


def _clock(hhmm: str) -> timedelta:
    hours, minutes = hhmm.split(":")
    return timedelta(hours=int(hours), minutes=int(minutes))


def _spans(window: ScheduleWindow, day: datetime) -> tuple[datetime, datetime] | None:
    """(start, end) of ``window`` on the local calendar ``day`` (midnight), if it starts that day."""
    if WEEKDAYS[day.weekday()] not in window.days:
        return None
    start_at, end_at = _clock(window.start), _clock(window.end)
    if end_at <= start_at:
        end_at += timedelta(days=1)  # overnight: ends on the next day
    tz = day.tzinfo
    midnight = day.replace(tzinfo=None)
    # wall-clock arithmetic, then the zone: 07:30 stays 07:30 across a daylight-saving change
    return (midnight + start_at).replace(tzinfo=tz), (midnight + end_at).replace(tzinfo=tz)


def active_capacity(autoscaling: ModelServeAutoscaling, now: datetime) -> ActiveCapacity:
    """The bounds in force at ``now`` (an aware datetime) and the seconds to the next change.

    >>> a = ModelServeAutoscaling(min_replicas=0, max_replicas=2, schedule=AutoscalingSchedule(
    ...     time_zone="UTC", windows=[ScheduleWindow(name="day", start="08:00", end="20:00",
    ...     min_replicas=1, max_replicas=4)]))
    >>> c = active_capacity(a, datetime(2026, 12, 7, 9, 0, tzinfo=UTC))
    >>> c.window, c.autoscaling.min_replicas, c.next_change_seconds
    ('day', 1, 39600.0)
    """
    schedule = autoscaling.schedule
    if schedule is None:
        return ActiveCapacity(None, autoscaling.for_serving(), None)
    tz = ZoneInfo(schedule.time_zone)
    local = now.astimezone(tz)
    today = datetime.combine(local.date(), time(), tzinfo=tz)
    spans: list[tuple[ScheduleWindow, datetime, datetime]] = []
    for offset in range(-1, 9):  # yesterday (an overnight window) through next week
        day = today + timedelta(days=offset)
        for window in schedule.windows:
            span = _spans(window, day)
            if span is not None:
                spans.append((window, *span))
    active = next((w for w, start, end in spans if start <= local < end), None)
    boundaries = [t for _, start, end in spans for t in (start, end) if t > local]
    next_change = (
        (min(boundaries).astimezone(UTC) - now.astimezone(UTC)).total_seconds() if boundaries else None
    )
    return ActiveCapacity(active.name if active else None, autoscaling.for_serving(active), next_change)
