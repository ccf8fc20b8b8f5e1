"""Status of every healthnav custom resource: metav1.Condition-shaped conditions, the status base, Events.

Status is computed, not accumulated: a reconcile derives it from what it observes, as the
kind's typed status model (:class:`ObservedStatus`), and :class:`ConditionSet` merges each
condition into the previous list so that ``lastTransitionTime`` moves only when ``status``
actually changes (what ``kubectl wait`` and dashboards rely on). An unchanged reconcile thus
produces a byte-identical status, so the operator can skip the write.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Self

from pydantic import Field, ValidationError

from healthnav.schema import CamelModel

ConditionStatus = Literal["True", "False", "Unknown"]


def now_rfc3339() -> str:
    """Current time as Kubernetes writes it (second precision, Z suffix)."""
    return datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def conditions_field() -> Any:
    """A status ``conditions`` list, declared as a map keyed by ``type`` (as metav1 does), so
    server-side apply and ``kubectl`` merge conditions by type instead of replacing the list."""
    return Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )


class Condition(CamelModel):
    """One aspect of the resource's state (the metav1.Condition shape)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    """Condition type in CamelCase, e.g. Complete, Schedulable, GatePassed."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    """Programmatic identifier (CamelCase) for the last transition."""
    message: str = Field(default="", max_length=32768)
    """Human-readable details about the last transition."""
    last_transition_time: str
    """When status last changed (RFC 3339)."""
    observed_generation: int | None = Field(default=None, ge=0)
    """metadata.generation the condition was computed from."""


MAX_CONDITION_MESSAGE = 32768


class ConditionSet:
    """The conditions of a status being derived: set or remove one by type.

    ``set`` keeps ``lastTransitionTime`` when the status is unchanged and stamps
    ``observedGeneration``; a new type is appended, so the order is stable across reconciles.
    """

    def __init__(self, conditions: Iterable[Condition], *, generation: int | None, now: str) -> None:
        self._items = [c.model_copy() for c in conditions]
        self.generation, self.now = generation, now

    def set(self, type: str, status: ConditionStatus, reason: str, message: str = "") -> None:
        message = message[:MAX_CONDITION_MESSAGE]
        for i, cond in enumerate(self._items):
            if cond.type == type:
                changed = cond.status != status
                self._items[i] = cond.model_copy(
                    update={
                        "status": status,
                        "reason": reason,
                        "message": message,
                        **({"last_transition_time": self.now} if changed else {}),
                        **({"observed_generation": self.generation} if self.generation is not None else {}),
                    }
                )
                return
        new = Condition(
            type=type, status=status, reason=reason, message=message, last_transition_time=self.now
        )
        if self.generation is not None:
            new.observed_generation = self.generation
        self._items.append(new)

    def remove(self, type: str) -> None:
        self._items = [c for c in self._items if c.type != type]

    def get(self, type: str) -> Condition | None:
        return next((c for c in self._items if c.type == type), None)

    def as_list(self) -> list[Condition]:
        return list(self._items)


def find_condition(conditions: Iterable[Mapping[str, Any]] | None, type: str) -> Mapping[str, Any] | None:
    """The condition ``type`` of an object read from the API (a Job, a RayService, a FineTuneJob)."""
    return next((c for c in conditions or () if c.get("type") == type), None)


class ObservedStatus(CamelModel):
    """Base of the kinds' status models: read from an object, written back as exactly what was set.

    :meth:`to_status` dumps only the fields a reconcile set (and never nulls), so the status the
    operator writes holds what it knows and nothing the schema merely allows.
    """

    @classmethod
    def from_status(cls, raw: Mapping[str, Any] | None) -> Self:
        """The status an object carries (unknown keys dropped); empty if it does not validate."""
        known = {f.alias or name for name, f in cls.model_fields.items()}
        try:
            return cls.model_validate({k: v for k, v in (raw or {}).items() if k in known})
        except ValidationError:
            return cls()

    def to_status(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True, exclude_none=True)

    def differs_from(self, old: ObservedStatus) -> bool:
        return json.dumps(old.to_status(), sort_keys=True) != json.dumps(self.to_status(), sort_keys=True)


@dataclass(frozen=True)
class StatusEvent:
    """A Kubernetes Event worth posting about a status transition (what ``kubectl describe`` shows)."""

    type: str  # Normal | Warning
    reason: str
    message: str
